"""The original's event bus subscribed to the ingestion lifecycle topics, checking that the
events dynreg's ingestion manager publishes are what the original's subscribers expect.

Run by crates/ingestion/tests/interop.rs:
    python ingest_events.py REDIS_URL CHANNEL_PREFIX DOMAIN OUT READY

Subscribes (Redis, the given channel prefix) to ingest:domain:start, ingest:domain:end and
knowledge:ingestion, creates READY, waits for one event on each, checks each against the
original's payloads (the keys its ingestion manager sends, their types, isoformat timestamps,
the event types its subscribers test for) and writes {topic: to_dict} to OUT. Exits non-zero
with the failing check on stderr.
"""

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path

from dataknobs_common.events import Event, EventType, create_event_bus

TOPICS = ["ingest:domain:start", "ingest:domain:end", "knowledge:ingestion"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_iso(payload: dict, key: str) -> None:
    value = payload.get(key)
    check(isinstance(value, str), f"{key} is not a string: {value!r}")
    parsed = datetime.fromisoformat(value)
    check(parsed.tzinfo is not None, f"{key} has no time zone: {value!r}")


def check_counts(payload: dict) -> None:
    for key in ("files_processed", "chunks_created", "files_deleted"):
        check(type(payload.get(key)) is int, f"{key} is not an int: {payload.get(key)!r}")


async def main(url: str, prefix: str, domain: str, out: str, ready: str) -> None:
    host, port = url.split("://", 1)[1].rstrip("/").split("/")[0].split(":")
    bus = create_event_bus(
        {"backend": "redis", "host": host, "port": int(port), "channel_prefix": prefix}
    )
    await bus.connect()
    got: dict[str, Event] = {}
    done = asyncio.Event()

    async def on_event(event: Event) -> None:
        got.setdefault(event.topic, event)
        if len(got) == len(TOPICS):
            done.set()

    try:
        for topic in TOPICS:
            await bus.subscribe(topic, on_event)
        Path(ready).write_text("ready")
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await bus.close()

    start, end, ingestion = (got[t] for t in TOPICS)
    # The original's manager: start {"domain_id", "started_at"}; end {"domain_id",
    # "files_processed", "chunks_created", "files_deleted", "status", "completed_at"}, both
    # CUSTOM (its tests look for a CUSTOM event on ingest:domain:end).
    check(start.type == EventType.CUSTOM, f"start type {start.type}")
    check(set(start.payload) == {"domain_id", "started_at"}, f"start keys {sorted(start.payload)}")
    check(start.payload["domain_id"] == domain, f"start domain {start.payload['domain_id']!r}")
    check_iso(start.payload, "started_at")
    check(end.type == EventType.CUSTOM, f"end type {end.type}")
    want = {"domain_id", "files_processed", "chunks_created", "files_deleted", "status", "completed_at"}
    check(want <= set(end.payload), f"end keys {sorted(end.payload)}")
    check(end.payload["domain_id"] == domain, f"end domain {end.payload['domain_id']!r}")
    check(end.payload["status"] == "completed", f"end status {end.payload['status']!r}")
    check_counts(end.payload)
    check_iso(end.payload, "completed_at")
    # The seed's example: `if event.type == EventType.UPDATED: print(event.payload)`.
    check(ingestion.type == EventType.UPDATED, f"knowledge:ingestion type {ingestion.type}")
    check(ingestion.payload.get("domain_id") == domain, f"knowledge:ingestion {ingestion.payload}")
    check_counts(ingestion.payload)
    Path(out).write_text(json.dumps({t: got[t].to_dict() for t in TOPICS}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
