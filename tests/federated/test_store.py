"""The coordinator's SQLite store (federated.store): the round lifecycle survives a reopen,
updates are recorded exactly once, model versions are never overwritten, and a process
killed inside a transaction leaves all of it or none of it."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgerun.federated.store import (
    AlreadyEnrolled,
    ModelVersionConflict,
    NotFound,
    RoundStateError,
    SchemaVersionError,
    Store,
    StoreError,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ["a", "b", "c"]


class Clock:
    """A fake clock: every call returns one second later than the last."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def key(client_id: str) -> bytes:
    return hashlib.sha256(client_id.encode()).digest()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "coordinator.db"


@pytest.fixture
def store(path: Path):
    """A file store with clients a, b, c enrolled, model version 0, and round 1 open for a and b."""
    with Store(path, clock=Clock()) as s:
        for c in CLIENTS:
            s.enrol(c, key(c), {"arch": "aarch64"})
        s.publish_model(0, b"model-0", {})
        s.open_round(1, 0, ["a", "b"], {"epochs": 1, "lr": 0.1}, deadline=5000.0)
        yield s


def run_python(code: str, *args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, **popen)


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# ---------------------------------------------------------------- lifecycle


def test_the_whole_lifecycle_is_found_again_after_reopening(store, path):
    assert store.record_update(1, "a", b"delta-a", 10, {"loss": 0.5})
    assert store.record_update(1, "b", b"delta-b", 30, {"loss": 0.7})
    store.finish_round(1, 1, b"model-1", {"accuracy": 0.8}, state={"fedadam": {"step": 1}})
    store.open_round(2, 1, ["c"], {"epochs": 2}, deadline=6000.0)
    store.fail_round(2, "too few reports")
    store.open_round(3, 1, ["a", "c"], {}, deadline=7000.0)
    store.touch("c", 4242.0)
    store.put_state("settings", {"rounds": 10})
    store.close()

    with Store(path) as s:
        assert [c.client_id for c in s.clients()] == CLIENTS
        assert s.client("c").public_key == key("c") and s.client("c").last_seen == 4242.0
        assert s.client("a").info == {"arch": "aarch64"}
        assert s.latest_model() == (1, b"model-1")
        assert s.model(0) == b"model-0" and s.model(2) is None
        assert s.model_record(1).sha256 == hashlib.sha256(b"model-1").digest()
        history = s.history()
        assert [(r.round, r.status) for r in history] == [(1, "aggregated"), (2, "failed")]
        assert history[0].metrics == {"accuracy": 0.8} and history[0].new_model_version == 1
        assert history[0].selected == ("a", "b") and history[0].config == {"epochs": 1, "lr": 0.1}
        assert history[1].reason == "too few reports" and history[1].new_model_version is None
        assert all(r.opened_at < r.finished_at for r in history)
        assert [(u.client_id, u.blob, u.num_examples) for u in s.updates(1)] == [
            ("a", b"delta-a", 10), ("b", b"delta-b", 30)]
        assert s.updates(1)[0].metrics == {"loss": 0.5}
        current = s.current_round()
        assert (current.round, current.status, current.selected) == (3, "open", ("a", "c"))
        assert current.deadline == 7000.0
        assert [(e.round, e.event) for e in s.events()] == [
            (1, "opened"), (1, "aggregated"), (2, "opened"), (2, "failed"), (3, "opened")]
        assert s.get_state("fedadam") == {"step": 1} and s.get_state("settings") == {"rounds": 10}


def test_a_round_goes_open_collecting_aggregated(store):
    assert store.current_round().status == "open"

    store.record_update(1, "a", b"d", 1, {})
    assert store.current_round().status == "collecting"

    store.finish_round(1, 1, b"m", {})
    assert store.current_round() is None
    assert store.round(1).status == "aggregated"


def test_the_file_is_wal_with_full_sync_and_foreign_keys(store, path):
    pragmas = {p: store._db.execute(f"PRAGMA {p}").fetchone()[0]
               for p in ("journal_mode", "synchronous", "foreign_keys")}

    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}  # 2 = FULL


def test_an_in_memory_store_works():
    with Store(":memory:") as s:
        s.enrol("a", b"k", {})
        s.publish_model(0, b"m", {})
        s.open_round(1, 0, ["a"], {}, 1.0)

        assert s.record_update(1, "a", b"d", 1, {})


# ---------------------------------------------------------------- clients


def test_enrolling_an_id_or_a_key_twice_raises_already_enrolled(store):
    with pytest.raises(AlreadyEnrolled, match="client 'a' is already enrolled"):
        store.enrol("a", b"another key", {})
    with pytest.raises(AlreadyEnrolled, match="its public key is already enrolled as 'a'"):
        store.enrol("z", key("a"), {})
    assert store.client("z") is None and len(store.clients()) == 3


def test_touch_records_last_seen_and_never_moves_it_back(store):
    store.touch("a", 50.0)
    store.touch("a", 40.0)

    assert store.client("a").last_seen == 50.0
    with pytest.raises(NotFound, match="client 'nobody' is not enrolled"):
        store.touch("nobody", 1.0)


# ---------------------------------------------------------------- updates


def test_a_duplicate_update_returns_false_and_leaves_one_row(store, path):
    assert store.record_update(1, "a", b"first", 5, {})

    assert not store.record_update(1, "a", b"second", 7, {})
    assert [(u.blob, u.num_examples) for u in store.updates(1)] == [(b"first", 5)]
    assert count(path, "updates") == 1


@pytest.mark.parametrize("round_number, client", [(1, "c"), (1, "nobody"), (2, "a")])
def test_updates_from_unselected_clients_or_for_unknown_rounds_are_refused(store, path, round_number, client):
    assert not store.record_update(round_number, client, b"d", 1, {})
    assert count(path, "updates") == 0
    assert store.current_round().status == "open"


@pytest.mark.parametrize("close", ["finish", "fail"])
def test_updates_for_finished_rounds_are_refused(store, path, close):
    store.record_update(1, "a", b"d", 1, {})
    if close == "finish":
        store.finish_round(1, 1, b"m", {})
    else:
        store.fail_round(1, "deadline")

    assert not store.record_update(1, "b", b"late", 1, {})
    assert store.reported(1) == ["a"] and count(path, "updates") == 1


@pytest.mark.parametrize("num_examples", [0, -3, 2.5, True])
def test_bad_num_examples_raise(store, num_examples):
    with pytest.raises(ValueError, match="num_examples must be an integer > 0"):
        store.record_update(1, "a", b"d", num_examples, {})


def test_metrics_that_are_not_json_raise(store):
    with pytest.raises(ValueError, match=r"client 'a': metrics: not JSON-serialisable"):
        store.record_update(1, "a", b"d", 1, {"x": object()})
    assert store.reported(1) == []


def test_concurrent_updates_record_each_client_exactly_once(path):
    clients = [f"device-{i:02d}" for i in range(24)]
    with Store(path) as s:
        for c in clients:
            s.enrol(c, key(c), {})
        s.publish_model(0, b"m", {})
        s.open_round(1, 0, clients, {}, 1e12)
        accepted: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def worker(offset: int) -> None:
            barrier.wait()
            for c in clients[offset:] + clients[:offset]:  # every thread tries every client
                try:
                    if s.record_update(1, c, c.encode(), 1, {}):
                        accepted.append(c)
                except Exception as exc:  # noqa: BLE001 - reported by the assert below
                    errors.append(exc)

        threads = [threading.Thread(target=worker, args=(3 * i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        assert sorted(accepted) == clients
        assert sorted(s.reported(1)) == clients
        assert all(u.blob == u.client_id.encode() for u in s.updates(1))


# ---------------------------------------------------------------- models


def test_publish_never_overwrites_a_version(store):
    with pytest.raises(ModelVersionConflict, match="model version 0 already exists"):
        store.publish_model(0, b"impostor", {})
    store.publish_model(5, b"model-5", {})
    with pytest.raises(ModelVersionConflict, match="model version 3 is stale; the latest is 5"):
        store.publish_model(3, b"model-3", {})

    assert store.model(0) == b"model-0" and store.model(3) is None


def test_the_schema_refuses_to_change_a_model_even_behind_the_api(store, path):
    store.close()
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="never overwritten"):
        db.execute("UPDATE models SET blob = x'00' WHERE version = 0")


def test_a_tampered_model_blob_raises_corrupt_record(store, path):
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER models_never_change")
        db.execute("UPDATE models SET blob = x'00' WHERE version = 0")

    with Store(path) as s, pytest.raises(StoreError, match="model version 0: stored sha256 does not match"):
        s.model(0)


# ---------------------------------------------------------------- round transitions


def test_opening_a_round_while_one_is_unfinished_raises(store):
    with pytest.raises(RoundStateError, match="cannot open round 2: round 1 is still open"):
        store.open_round(2, 0, ["a"], {}, 1.0)


def test_rounds_must_increase(store):
    store.fail_round(1, "x")

    with pytest.raises(RoundStateError, match="rounds must increase, the latest is 1"):
        store.open_round(1, 0, ["a"], {}, 1.0)


@pytest.mark.parametrize("model_version, selected, error, message", [
    (7, ["a"], NotFound, "model version 7 does not exist"),
    (0, ["a", "ghost"], NotFound, r"selected clients are not enrolled: \['ghost'\]"),
    (0, ["a", "a"], ValueError, "selected must be a non-empty list of distinct client ids"),
    (0, [], ValueError, "selected must be a non-empty list"),
])
def test_open_round_checks_its_arguments(store, model_version, selected, error, message):
    store.fail_round(1, "x")

    with pytest.raises(error, match=message):
        store.open_round(2, model_version, selected, {}, 1.0)
    assert store.round(2) is None


@pytest.mark.parametrize("action", ["finish", "fail"])
def test_a_finished_or_unknown_round_cannot_be_finished_again(store, action):
    store.finish_round(1, 1, b"m", {})
    close = (lambda r: store.finish_round(r, 2, b"m2", {})) if action == "finish" else (
        lambda r: store.fail_round(r, "x"))

    with pytest.raises(RoundStateError, match="cannot .* round 1: it is already aggregated"):
        close(1)
    with pytest.raises(RoundStateError, match="round 9: it was never opened"):
        close(9)
    assert store.latest_model() == (1, b"m")


def test_finish_round_with_an_existing_version_changes_nothing(store):
    with pytest.raises(ModelVersionConflict, match="model version 0 already exists"):
        store.finish_round(1, 0, b"m", {})

    assert store.current_round().status == "open"
    assert store.latest_model() == (0, b"model-0") and store.history() == []


# ---------------------------------------------------------------- atomicity and crashes


def test_finish_round_rolls_back_entirely_when_it_fails_midway(store):
    store._db.execute("CREATE TEMP TRIGGER boom AFTER UPDATE ON main.rounds "
                      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")

    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        store.finish_round(1, 1, b"model-1", {"accuracy": 0.8}, state={"opt": {"m": 1}})

    assert store.model(1) is None and store.latest_model()[0] == 0  # the model insert came first
    assert store.current_round().round == 1 and store.history() == []
    assert [e.event for e in store.events(1)] == ["opened"] and store.get_state("opt") is None
    store._db.execute("DROP TRIGGER boom")
    store.finish_round(1, 1, b"model-1", {})
    assert store.round(1).status == "aggregated"


CRASH_IN_FINISH_ROUND = """
import os, signal, sys
from edgerun.federated.store import Store
store = Store(sys.argv[1])
store._db.create_function("die", 0, lambda: os.kill(os.getpid(), signal.SIGKILL))
if sys.argv[2] != "none":
    store._db.execute(f"CREATE TEMP TRIGGER die AFTER {sys.argv[2]} BEGIN SELECT die(); END")
store.finish_round(1, 1, b"model-1" * 1000, {"accuracy": 0.9}, state={"opt": {"m": [1, 2]}})
"""


@pytest.mark.parametrize("kill_after", ["none", "INSERT ON main.models", "UPDATE ON main.rounds",
                                        "INSERT ON main.round_events", "INSERT ON main.state"])
def test_a_process_killed_inside_finish_round_leaves_all_or_nothing(store, path, kill_after):
    store.record_update(1, "a", b"d", 1, {})
    store.close()

    child = run_python(CRASH_IN_FINISH_ROUND, str(path), kill_after)
    assert child.wait(timeout=60) == (0 if kill_after == "none" else -signal.SIGKILL)

    with Store(path) as s:
        parts = {"model": s.model(1) is not None, "aggregated": s.round(1).status == "aggregated",
                 "history": [r.round for r in s.history()] == [1],
                 "logged": [e.event for e in s.events(1)] == ["opened", "aggregated"],
                 "state": s.get_state("opt") is not None}
        assert set(parts.values()) == {kill_after == "none"}, parts
        assert s.updates(1)[0].blob == b"d"


WRITER = """
import hashlib, sys
from edgerun.federated.store import Store

def payload(tag):  # deterministic bytes of a size between 100 and 20,000
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * 700)[: 100 + int.from_bytes(seed[:2], "big") % 19900]

store = Store(sys.argv[1])
clients = [f"c{i}" for i in range(8)]
for c in clients:
    store.enrol(c, hashlib.sha256(c.encode()).digest(), {})
store.publish_model(0, payload("model-0"), {})
version, r = 0, 0
while True:
    r += 1
    store.open_round(r, version, clients, {"round": r}, 1e12)
    for c in clients:
        store.record_update(r, c, payload(f"{r}/{c}"), r, {"round": r})
    if r % 3 == 0:
        store.fail_round(r, f"round {r} fails")
    else:
        version += 1
        store.finish_round(r, version, payload(f"model-{version}"), {"round": r})
    print(r, flush=True)
"""


def payload(tag: str) -> bytes:
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * 700)[: 100 + int.from_bytes(seed[:2], "big") % 19900]


@pytest.mark.parametrize("delay", [0.0, 0.007, 0.013, 0.021, 0.031, 0.047, 0.063, 0.089])
def test_a_writer_killed_at_random_leaves_a_consistent_database(path, delay):
    child = run_python(WRITER, str(path), stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if int(line) >= 4:
                break
        time.sleep(delay)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    with Store(path) as s:
        check_writer_invariants(s)
        reopened_store_still_works(s)


def check_writer_invariants(s: Store) -> None:
    clients = [f"c{i}" for i in range(8)]
    history = s.history()
    assert len(history) >= 4
    version = 0
    for r in history:
        assert s.reported(r.round) == clients and r.selected == tuple(clients)  # closed after all 8 updates
        assert [e.event for e in s.events(r.round)] == ["opened", r.status]
        if r.round % 3 == 0:
            assert r.status == "failed" and r.reason == f"round {r.round} fails"
        else:
            version += 1
            assert r.status == "aggregated" and r.new_model_version == version
            assert s.model(version) == payload(f"model-{version}")
    assert s.latest_model()[0] == version
    current = s.current_round()
    rounds = [r.round for r in history] + ([] if current is None else [current.round])
    assert rounds == list(range(1, len(rounds) + 1))
    if current is not None:
        reported = s.reported(current.round)
        assert reported == clients[: len(reported)]  # a prefix of the loop's order
        assert current.status == ("open" if not reported else "collecting")
        assert current.selected == tuple(clients) and [e.event for e in s.events(current.round)] == ["opened"]
    for r in rounds:
        for u in s.updates(r):  # every row is whole: the blob its writer computed
            assert (u.blob, u.num_examples, u.metrics) == (payload(f"{r}/{u.client_id}"), r, {"round": r})


def reopened_store_still_works(s: Store) -> None:
    current = s.current_round()
    if current is not None:
        s.fail_round(current.round, "coordinator restarted")
    last = s.history()[-1].round
    s.open_round(last + 1, s.latest_model()[0], ["c0"], {}, 1e12)
    assert s.record_update(last + 1, "c0", b"d", 1, {})


# ---------------------------------------------------------------- opening files


def test_a_schema_version_mismatch_raises(store, path):
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")

    with pytest.raises(SchemaVersionError, match="schema version 99, this edgerun reads version 1"):
        Store(path)


def test_a_sqlite_file_of_something_else_raises(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")

    with pytest.raises(SchemaVersionError, match="not a coordinator store"):
        Store(path)


def test_a_file_that_is_not_sqlite_raises(path):
    path.write_bytes(b"this is not a database" * 100)

    with pytest.raises(StoreError, match="not a SQLite database"):
        Store(path)


def test_state_round_trips_and_is_replaced(store):
    assert store.get_state("fedadam") is None

    store.put_state("fedadam", {"m": [0.1, 0.2], "step": 1})
    store.put_state("fedadam", {"m": [0.3], "step": 2})

    assert store.get_state("fedadam") == {"m": [0.3], "step": 2}
    with pytest.raises(ValueError, match="state 'x': expected a JSON-able dict, got list"):
        store.put_state("x", [1])
