"""The original's HTTPRegistryBackend against a dynreg registry server.

Run by crates/server/tests/interop_http.rs:
    python http_client.py BASE_URL TOKEN
Exits non-zero with the failing check on stderr; leaves one registration, "from-python",
for the Rust side to read back.
"""

import asyncio
import json
import sys

from dataknobs_bots.registry import HTTPRegistryBackend
from dataknobs_data import SortOrder, SortSpec


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def main(base: str, token: str) -> None:
    b = HTTPRegistryBackend(base_url=base, auth_token=token)
    await b.initialize()
    try:
        r = await b.register("bot-1", {"llm": {"model": "m"}, "n": 1}, metadata={"team": "x", "tier": 1})
        check(r.bot_id == "bot-1" and r.status == "active", f"register answered {r!r}")
        await b.register("bot-2", {"n": 2}, metadata={"team": "y", "tier": 2})
        await b.register("bot-3", {"n": 3}, metadata={"team": "x", "tier": 3})
        # Re-register keeps created_at.
        again = await b.register("bot-1", {"llm": {"model": "m2"}, "n": 1}, metadata={"team": "x", "tier": 1})
        check(again.created_at == r.created_at, f"created_at moved: {r.created_at} -> {again.created_at}")
        check(await b.get_config("bot-1") == {"llm": {"model": "m2"}, "n": 1}, "get_config")
        check(await b.peek_config("bot-1") == {"llm": {"model": "m2"}, "n": 1}, "peek_config")
        check(await b.exists("bot-1"), "exists")
        check(await b.get("nope") is None, "get of a missing bot")
        check(await b.deactivate("bot-2"), "deactivate")
        check(not await b.exists("bot-2"), "exists after deactivate")
        check(not await b.deactivate("nope"), "deactivate of a missing bot")
        got = await b.get("bot-2")
        check(got is not None and got.status == "inactive", f"inactive bot reads back: {got!r}")
        lst = await b.list_active(filter_metadata={"team": "x"}, sort=[SortSpec("metadata.tier", SortOrder.DESC)])
        check([x.bot_id for x in lst] == ["bot-3", "bot-1"], f"filtered, sorted list: {[x.bot_id for x in lst]}")
        page = await b.list_all(sort=[SortSpec("bot_id", SortOrder.ASC)], limit=1, offset=1)
        check([x.bot_id for x in page] == ["bot-2"], f"page: {[x.bot_id for x in page]}")
        check(await b.count() == 2, "count")
        check(await b.count_inactive() == 1, "count_inactive")
        check(sorted(await b.list_ids()) == ["bot-1", "bot-3"], "list_ids")
        inactive = await b.list_inactive()
        check([x.bot_id for x in inactive] == ["bot-2"], "list_inactive")
        check(await b.unregister("bot-3"), "unregister")
        check(not await b.unregister("bot-3"), "unregister of a missing bot")
        # The server refuses a bulk delete (405); the original client deletes one by one.
        await b.clear()
        check(await b.count_all() == 0, "clear")
        # Numbers and key order survive the server: json.dumps of what comes back is what was sent.
        fidelity = {"z": 2**64, "tiny": 1.5e-300, "small": 1e-05, "a": {"y": [1.0, 1e16], "b": None}, "m": True}
        await b.register("fidelity", fidelity, metadata={"zeta": 1, "alpha": 2**70})
        back = await b.get("fidelity")
        check(json.dumps(back.config) == json.dumps(fidelity), f"config text: {json.dumps(back.config)}")
        check(list(back.metadata) == ["zeta", "alpha"] and back.metadata["alpha"] == 2**70, f"metadata: {back.metadata}")
        check(await b.unregister("fidelity"), "unregister fidelity")
        await b.register(
            "from-python",
            {"unicode": "日本語 ✓", "nested": {"a": [1, 2.5, None, True]}, "big": 12345678901234},
            metadata={"k": "v"},
        )
    finally:
        await b.close()
    # A read-only client and a wrong token.
    ro = HTTPRegistryBackend(base_url=base, auth_token=token, read_only=True)
    await ro.initialize()
    try:
        check((await ro.get_config("from-python"))["unicode"] == "日本語 ✓", "read-only read")
    finally:
        await ro.close()
    bad = HTTPRegistryBackend(base_url=base, auth_token="wrong")
    await bad.initialize()
    try:
        try:
            await bad.register("intruder", {})
        except Exception as e:  # the original raises its HTTP error carrying the status
            check("401" in repr(e) or getattr(e, "status", None) == 401, f"wrong token: {e!r}")
        else:
            raise AssertionError("a wrong token could write")
    finally:
        await bad.close()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
