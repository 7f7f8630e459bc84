"""Model control shared by worker processes: a load or unload request reaches one worker, which
records it here; every worker applies records newer than what it has applied (within `poll_s`).

The record is one JSON file, `{"seq": n, "models": {name: {"action": "load"|"unload", "seq": k}}}`,
rewritten under an exclusive flock and replaced atomically, so readers never see half of it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from pathlib import Path

from edgerun.serving.errors import ServingError

log = logging.getLogger("edgerun.serving")


class ControlLog:
    """The shared record in `folder` (created by the supervisor, one per server)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "model-control.json"
        self._lock_path = Path(folder) / "model-control.lock"
        self.applied: dict[str, int] = {}

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"seq": 0, "models": {}}

    def record(self, model: str, action: str) -> int:
        """Append `action` ('load' or 'unload') for `model`; returns its sequence number, which this
        worker then counts as applied. OSError if the folder is not writable."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            state["seq"] += 1
            state["models"][model] = {"action": action, "seq": state["seq"]}
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self.path)
        self.applied[model] = state["seq"]
        return state["seq"]

    def pending(self) -> list[tuple[str, str, int]]:
        """(model, action, seq) records this worker has not applied yet, oldest first."""
        models = self.read().get("models")
        if not isinstance(models, dict):
            return []
        todo = [(name, entry["action"], entry["seq"]) for name, entry in models.items()
                if isinstance(entry, dict) and isinstance(entry.get("seq"), int)
                and entry["seq"] > self.applied.get(name, 0)]
        return sorted(todo, key=lambda item: item[2])


async def follow(control: ControlLog, handlers, poll_s: float = 0.25) -> None:
    """Apply other workers' load/unload records forever (cancel to stop)."""
    while True:
        await asyncio.sleep(poll_s)
        try:
            todo = control.pending()
        except Exception:  # a malformed record: never let the follower die
            log.exception("cannot read model control records")
            continue
        for model, action, seq in todo:
            try:
                if action == "load":
                    await handlers.repository.load(model)
                else:
                    await handlers.repository.unload(model)
            except ServingError:
                pass
            except Exception:
                log.exception("applying model control %s %s failed", action, model)
            control.applied[model] = seq
            log.info("applied model control %s %s from another worker", action, model)
