"""Model control records (serving.control): the follower survives failing loads and bad records."""

from __future__ import annotations

import asyncio
import json
import types

from edgerun.serving.control import ControlLog, follow


def test_follow_survives_failures_and_bad_records(tmp_path) -> None:
    control, writer = ControlLog(tmp_path), ControlLog(tmp_path)
    seen: list[str] = []

    async def load(name):
        seen.append(name)
        raise RuntimeError("boom")

    handlers = types.SimpleNamespace(repository=types.SimpleNamespace(load=load, unload=load))

    async def main():
        task = asyncio.ensure_future(follow(control, handlers, poll_s=0.01))
        writer.record("a", "load")
        await asyncio.sleep(0.1)
        control.path.write_text(json.dumps({"seq": 5, "models": {"b": "junk", "c": {"seq": "x"}}}))
        await asyncio.sleep(0.1)
        control.path.write_text(json.dumps({"seq": 6, "models": {"d": {"action": "load", "seq": 6}}}))
        await asyncio.sleep(0.1)
        assert not task.done(), task
        task.cancel()

    asyncio.run(main())
    assert seen == ["a", "d"]
