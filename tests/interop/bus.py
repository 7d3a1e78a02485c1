"""The original's event bus (Redis or PostgreSQL), publishing or subscribing, for
crates/event-bus/tests/interop.rs.

    python bus.py publish   BACKEND URL PREFIX EVENTS_JSON          # publish each event (to_dict form)
    python bus.py subscribe BACKEND URL PREFIX COUNT OUT READY      # receive COUNT on each subscription
    python bus.py relay     BACKEND URL PREFIX OUT                  # publish FIDELITY on PREFIX:in,
                                                                    # receive it back on PREFIX:bots

BACKEND is redis or postgres; URL is the server's URL (127.0.0.1 only). PREFIX is the topic
prefix of this run: the subscriber listens to the topic PREFIX:bots (and, on Redis, to the
pattern PREFIX:*). Received events are written to OUT as JSON lines
{"via": "exact"|"pattern", "event": <to_dict>}; READY is created once subscribed.
"""

import asyncio
import json
import sys
from pathlib import Path

from dataknobs_common.events import Event, EventType, create_event_bus


def bus_for(backend: str, url: str):
    if backend == "redis":
        rest = url.split("://", 1)[1].rstrip("/")
        host, port = rest.split(":")
        return create_event_bus({"backend": "redis", "host": host, "port": int(port.split("/")[0])})
    return create_event_bus({"backend": "postgres", "connection_string": url})


async def publish(backend: str, url: str, events_file: str) -> None:
    bus = bus_for(backend, url)
    await bus.connect()
    try:
        for line in Path(events_file).read_text().splitlines():
            event = Event.from_dict(json.loads(line))
            await bus.publish(event.topic, event)
    finally:
        await bus.close()


async def subscribe(backend: str, url: str, prefix: str, count: int, out: str, ready: str) -> None:
    # One bus per subscription: the original's Redis bus hands a message to every subscription
    # of its topic, so an exact and a pattern subscription on one bus would see duplicates.
    bus = bus_for(backend, url)
    await bus.connect()
    pattern_bus = None
    got: list[tuple[str, dict]] = []
    done = asyncio.Event()
    wanted = count * (2 if backend == "redis" else 1)

    def handler(via: str):
        async def on_event(event: Event) -> None:
            got.append((via, event.to_dict()))
            if len(got) >= wanted:
                done.set()

        return on_event

    try:
        await bus.subscribe(f"{prefix}:bots", handler("exact"))
        if backend == "redis":
            pattern_bus = bus_for(backend, url)
            await pattern_bus.connect()
            await pattern_bus.subscribe(f"{prefix}:bots", handler("pattern"), pattern=f"{prefix}:*")
        Path(ready).write_text("ready")
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        with open(out, "w") as f:
            for via, event in got:
                f.write(json.dumps({"via": via, "event": event}) + "\n")
        await bus.close()
        if pattern_bus is not None:
            await pattern_bus.close()


# Values whose text and order a relay must keep: integers beyond 64 bits, floats that need
# exact parsing or Python's exponent form, keys out of sorted order, nesting.
FIDELITY = {
    "z": 2**64,
    "neg": -(2**70),
    "tiny": 1.5e-300,
    "small": 1e-05,
    "third": 0.1 + 0.2,
    "big_float": 1e16,
    "a": {"y": [1.0, 100.0, "\u00e9"], "b": None},
    "m": True,
}


async def relay(backend: str, url: str, prefix: str, out: str) -> None:
    """Publishes FIDELITY on PREFIX:in; dynreg re-publishes what it received on PREFIX:bots.
    Writes {"sent": <json.dumps>, "received": <json.dumps>, "keys": [...]} to OUT."""
    bus = bus_for(backend, url)
    await bus.connect()
    got: list[Event] = []
    done = asyncio.Event()

    async def on_event(event: Event) -> None:
        got.append(event)
        done.set()

    try:
        await bus.subscribe(f"{prefix}:bots", on_event)
        sent = Event(type=EventType.UPDATED, topic=f"{prefix}:in", payload=FIDELITY)
        await bus.publish(sent.topic, sent)
        await asyncio.wait_for(done.wait(), timeout=60)
        received = got[0].payload
        Path(out).write_text(
            json.dumps(
                {
                    "sent": json.dumps(FIDELITY),
                    "received": json.dumps(received),
                    "keys": list(received),
                }
            )
        )
    finally:
        await bus.close()


if __name__ == "__main__":
    mode, backend, url, prefix = sys.argv[1:5]
    if mode == "publish":
        asyncio.run(publish(backend, url, sys.argv[5]))
    elif mode == "relay":
        asyncio.run(relay(backend, url, prefix, sys.argv[5]))
    else:
        asyncio.run(subscribe(backend, url, prefix, int(sys.argv[5]), sys.argv[6], sys.argv[7]))
