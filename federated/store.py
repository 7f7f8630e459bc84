"""The federated coordinator's durable store: one SQLite file.

Every state transition (enrol a client, publish a model, open a round, record an
update, finish or fail a round) is one `BEGIN IMMEDIATE ... COMMIT` transaction,
so a crash (kill -9, power loss) leaves either all of it or none of it on disk:
the file is in WAL mode with `synchronous=FULL` (a returned call is durable) and
foreign keys on. The schema also enforces what the API promises, as a backstop:
model versions are never updated or deleted, a round has at most one update per
client (PRIMARY KEY (round, client_id)) and only from a selected client, at most
one round is unfinished, and a finished round never changes again.

Round states: open -> collecting (first update recorded) -> aggregated | failed.
Deadlines are stored, not enforced: closing a late round is the coordinator's call.

One connection per Store, shared by the gRPC server's threads
(`check_same_thread=False`). Every use of it, reads included, holds one lock: on a
shared connection a read from thread B inside thread A's transaction would see
A's uncommitted rows. Timestamps are seconds since the epoch from `clock`.

Errors are `StoreError`s with specific subclasses; bad arguments (a negative
num_examples, metrics that are not strict JSON, e.g. NaN or Infinity) raise ValueError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerun.runtime.errors import EdgerunError

log = logging.getLogger("edgerun.federated.store")

SCHEMA_VERSION = 1
UNFINISHED = ("open", "collecting")

_SCHEMA = [
    "CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    """CREATE TABLE clients (
        client_id TEXT PRIMARY KEY, public_key BLOB NOT NULL UNIQUE, info TEXT NOT NULL,
        enrolled_at REAL NOT NULL, last_seen REAL)""",
    """CREATE TABLE models (
        version INTEGER PRIMARY KEY CHECK (version >= 0), blob BLOB NOT NULL,
        sha256 BLOB NOT NULL CHECK (length(sha256) = 32), metrics TEXT NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TRIGGER models_never_change BEFORE UPDATE ON models
        BEGIN SELECT RAISE(ABORT, 'model versions are never overwritten'); END""",
    """CREATE TRIGGER models_never_deleted BEFORE DELETE ON models
        BEGIN SELECT RAISE(ABORT, 'model versions are never deleted'); END""",
    """CREATE TABLE rounds (
        round INTEGER PRIMARY KEY CHECK (round >= 0),
        model_version INTEGER NOT NULL REFERENCES models(version),
        config TEXT NOT NULL, deadline REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'collecting', 'aggregated', 'failed')),
        opened_at REAL NOT NULL, finished_at REAL, metrics TEXT NOT NULL DEFAULT '{}', reason TEXT,
        new_model_version INTEGER UNIQUE REFERENCES models(version),
        CHECK ((status IN ('open', 'collecting')) = (finished_at IS NULL)),
        CHECK ((status = 'aggregated') = (new_model_version IS NOT NULL)))""",
    "CREATE UNIQUE INDEX one_unfinished_round ON rounds ((finished_at IS NULL)) WHERE finished_at IS NULL",
    """CREATE TRIGGER finished_rounds_never_change BEFORE UPDATE ON rounds WHEN OLD.finished_at IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'a finished round never changes'); END""",
    """CREATE TABLE round_clients (
        round INTEGER NOT NULL REFERENCES rounds(round), position INTEGER NOT NULL,
        client_id TEXT NOT NULL REFERENCES clients(client_id),
        PRIMARY KEY (round, client_id), UNIQUE (round, position))""",
    """CREATE TABLE updates (
        round INTEGER NOT NULL, client_id TEXT NOT NULL, blob BLOB NOT NULL,
        sha256 BLOB NOT NULL CHECK (length(sha256) = 32),
        num_examples INTEGER NOT NULL CHECK (num_examples > 0), metrics TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (round, client_id),
        FOREIGN KEY (round, client_id) REFERENCES round_clients(round, client_id))""",
    """CREATE TRIGGER updates_never_change BEFORE UPDATE ON updates
        BEGIN SELECT RAISE(ABORT, 'updates are recorded exactly once'); END""",
    """CREATE TABLE round_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL REFERENCES rounds(round),
        event TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL)""",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)",
]


# ---------------------------------------------------------------- errors


class StoreError(EdgerunError):
    """The store refuses an operation or cannot be used."""


class SchemaVersionError(StoreError):
    """The file is not a coordinator store, or one with another schema version."""


class AlreadyEnrolled(StoreError):
    """The client id, or its public key, is already enrolled."""


class NotFound(StoreError):
    """An unknown client, model version or round."""


class ModelVersionConflict(StoreError):
    """A model version that exists already or is not above the latest one."""


class RoundStateError(StoreError):
    """A round transition its state does not allow (finish a finished round, open two rounds)."""


class CorruptRecord(StoreError):
    """A stored blob whose sha256 no longer matches."""


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    public_key: bytes
    info: dict[str, Any]
    enrolled_at: float
    last_seen: float | None


@dataclass(frozen=True)
class ModelRecord:
    """A published model version without its blob."""

    version: int
    sha256: bytes
    size: int
    metrics: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class RoundRecord:
    round: int
    model_version: int
    selected: tuple[str, ...]
    config: dict[str, Any]
    deadline: float
    status: str  # "open", "collecting", "aggregated" or "failed"
    opened_at: float
    finished_at: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why a failed round failed
    new_model_version: int | None = None  # what an aggregated round published


@dataclass(frozen=True)
class UpdateRecord:
    round: int
    client_id: str
    blob: bytes
    num_examples: int
    metrics: dict[str, Any]
    received_at: float


@dataclass(frozen=True)
class RoundEvent:
    """One line of the append-only round log: "opened", "aggregated" or "failed"."""

    round: int
    event: str
    at: float
    detail: dict[str, Any]


# ---------------------------------------------------------------- helpers


def _dumps(name: str, value: Any) -> str:
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON-able dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)  # strict JSON: no NaN or Infinity
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not JSON-serialisable: {exc}") from None


def _digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def _checked(what: str, blob: bytes, digest: bytes) -> bytes:
    if _digest(blob) != digest:
        raise CorruptRecord(f"{what}: stored sha256 does not match its {len(blob)} bytes")
    return bytes(blob)


def _enrolment(client_id: str, public_key: bytes, info: dict[str, Any]) -> str:
    """The info of one enrolment as JSON; ValueError for an empty id or key, or info not JSON-able."""
    if not isinstance(client_id, str) or not client_id:
        raise ValueError(f"client_id must be a non-empty string, got {client_id!r}")
    if not isinstance(public_key, bytes) or not public_key:
        raise ValueError(f"client {client_id!r}: public_key must be non-empty bytes")
    return _dumps("info", info)


def _first_conflict(db: sqlite3.Connection, rows: Sequence[tuple[str, bytes, str, float]]) -> str:
    """Why the enrolment of `rows` (client_id, public_key, ...) breaks uniqueness: the first id or
    key given twice, or already enrolled."""
    ids: set[str] = set()
    keys: dict[bytes, str] = {}
    for client_id, key, *_ in rows:
        if client_id in ids:
            return f"client {client_id!r} is given twice"
        if key in keys:
            return f"client {client_id!r}: its public key is also given for {keys[key]!r}"
        ids.add(client_id)
        keys[key] = client_id
    for client_id, key, *_ in rows:
        row = db.execute("SELECT client_id FROM clients WHERE client_id = ? OR public_key = ?",
                         (client_id, key)).fetchone()
        if row is not None and row[0] == client_id:
            return f"client {client_id!r} is already enrolled"
        if row is not None:
            return f"client {client_id!r}: its public key is already enrolled as {row[0]!r}"
    return "an enrolment breaks a uniqueness constraint"


def _round_record(row: sqlite3.Row, selected: Sequence[str]) -> RoundRecord:
    return RoundRecord(row["round"], row["model_version"], tuple(selected), json.loads(row["config"]),
                       row["deadline"], row["status"], row["opened_at"], row["finished_at"],
                       json.loads(row["metrics"]), row["reason"], row["new_model_version"])


# ---------------------------------------------------------------- the store


class Store:
    """The coordinator's clients, model versions, rounds, updates and settings.

    `path` is a file (created with the schema if missing) or ":memory:". Opening a
    file with another schema version raises SchemaVersionError; a file that is not
    SQLite raises StoreError. Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        try:
            self._configure()
            self._check_schema()
        except BaseException:
            self._db.close()
            raise

    def _configure(self) -> None:
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a SQLite database ({exc})") from None
        if mode != "wal" and self.path != ":memory:":
            log.warning("%s: journal mode is %s, not wal", self.path, mode)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")

    def _check_schema(self) -> None:
        with self._transaction() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,))
                return
            if "schema_version" not in tables:
                raise SchemaVersionError(f"{self.path}: not a coordinator store (no schema_version table)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            found = None if row is None else row[0]
            if found != SCHEMA_VERSION:
                raise SchemaVersionError(f"{self.path}: schema version {found}, this edgerun reads "
                                         f"version {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run one transaction: committed if the block returns,
        rolled back if it raises. Writes take SQLite's write lock at BEGIN."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ clients
    def enrol(self, client_id: str, public_key: bytes, info: dict[str, Any]) -> None:
        """Register a client and its public key. AlreadyEnrolled if the id or the key exists."""
        info_json = _enrolment(client_id, public_key, info)
        with self._transaction() as db:
            row = db.execute("SELECT client_id FROM clients WHERE client_id = ? OR public_key = ?",
                             (client_id, public_key)).fetchone()
            if row is not None:
                if row[0] == client_id:
                    raise AlreadyEnrolled(f"client {client_id!r} is already enrolled")
                raise AlreadyEnrolled(f"client {client_id!r}: its public key is already enrolled "
                                      f"as {row[0]!r}")
            db.execute("INSERT INTO clients (client_id, public_key, info, enrolled_at) VALUES (?, ?, ?, ?)",
                       (client_id, public_key, info_json, self._clock()))

    def enrol_many(self, clients: Iterable[tuple[str, bytes, dict[str, Any]]]) -> int:
        """Register many (client_id, public_key, info) at once, in ONE transaction (one fsync:
        a simulated fleet of 10,000 takes a fraction of a second, where `enrol` commits each);
        returns how many. The checks of `enrol`: AlreadyEnrolled, and nothing written, when
        an id or key is enrolled already or given twice; ValueError for a bad field."""
        now = self._clock()
        rows = [(cid, key, _enrolment(cid, key, info), now) for cid, key, info in clients]
        with self._transaction() as db:
            db.execute("SAVEPOINT enrol_many")
            try:
                db.executemany("INSERT INTO clients (client_id, public_key, info, enrolled_at) VALUES (?, ?, ?, ?)",
                               rows)
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK TO enrol_many")
                raise AlreadyEnrolled(_first_conflict(db, rows)) from None
            db.execute("RELEASE enrol_many")
        return len(rows)

    def client(self, client_id: str) -> ClientRecord | None:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT * FROM clients WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else self._client_record(row)

    def clients(self) -> list[ClientRecord]:
        """Every enrolled client, by id."""
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT * FROM clients ORDER BY client_id").fetchall()
        return [self._client_record(r) for r in rows]

    def client_ids(self) -> list[str]:
        """Every enrolled client's id, sorted (no keys or info read)."""
        with self._transaction(write=False) as db:
            return [r[0] for r in db.execute("SELECT client_id FROM clients ORDER BY client_id")]

    def client_count(self) -> int:
        with self._transaction(write=False) as db:
            return db.execute("SELECT count(*) FROM clients").fetchone()[0]

    @staticmethod
    def _client_record(row: sqlite3.Row) -> ClientRecord:
        return ClientRecord(row["client_id"], bytes(row["public_key"]), json.loads(row["info"]),
                            row["enrolled_at"], row["last_seen"])

    def touch(self, client_id: str, now: float | None = None) -> None:
        """Record that the client was seen at `now` (never moves last_seen back).
        NotFound if the client is not enrolled. Costs a durable write (an fsync)."""
        now = self._clock() if now is None else float(now)
        with self._transaction() as db:
            cursor = db.execute("UPDATE clients SET last_seen = max(coalesce(last_seen, ?), ?) "
                                "WHERE client_id = ?", (now, now, client_id))
            if cursor.rowcount == 0:
                raise NotFound(f"client {client_id!r} is not enrolled")

    # ------------------------------------------------------------- models
    def publish_model(self, version: int, blob: bytes, metrics: dict[str, Any]) -> None:
        """Store a new global model version. ModelVersionConflict unless `version` is
        above every stored version (a version is never overwritten)."""
        with self._transaction() as db:
            self._insert_model(db, version, blob, metrics)

    def _insert_model(self, db: sqlite3.Connection, version: int, blob: bytes,
                      metrics: dict[str, Any]) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"model version must be an integer >= 0, got {version!r}")
        if not isinstance(blob, bytes):
            raise ValueError(f"model version {version}: blob must be bytes, got {type(blob).__name__}")
        metrics_json = _dumps(f"model version {version}: metrics", metrics)
        latest = db.execute("SELECT max(version) FROM models").fetchone()[0]
        if latest is not None and version <= latest:
            exists = "already exists" if version == latest or self._has_model(db, version) else "is stale"
            raise ModelVersionConflict(f"model version {version} {exists}; the latest is {latest} "
                                       f"and versions are never overwritten")
        db.execute("INSERT INTO models (version, blob, sha256, metrics, created_at) VALUES (?, ?, ?, ?, ?)",
                   (version, blob, _digest(blob), metrics_json, self._clock()))

    @staticmethod
    def _has_model(db: sqlite3.Connection, version: int) -> bool:
        return db.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone() is not None

    def model(self, version: int) -> bytes | None:
        """The blob of a model version, None if there is none. CorruptRecord if its
        sha256 does not match."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT blob, sha256 FROM models WHERE version = ?", (version,)).fetchone()
        return None if row is None else _checked(f"model version {version}", row[0], row[1])

    def latest_model(self) -> tuple[int, bytes] | None:
        """(version, blob) of the newest model, None before the first publication."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT version, blob, sha256 FROM models "
                             "ORDER BY version DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], _checked(f"model version {row[0]}", row[1], row[2]))

    def model_record(self, version: int) -> ModelRecord | None:
        """A model version's sha256, size, metrics and time, without the blob."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT version, sha256, length(blob), metrics, created_at FROM models "
                             "WHERE version = ?", (version,)).fetchone()
        return None if row is None else ModelRecord(row[0], bytes(row[1]), row[2], json.loads(row[3]), row[4])

    # ------------------------------------------------------------- rounds
    def open_round(self, round: int, model_version: int, selected: Sequence[str], config: dict[str, Any],
                   deadline: float) -> None:
        """Open `round` for the `selected` clients (distinct, enrolled) on a stored
        model version. RoundStateError if another round is unfinished or `round` is
        not above every earlier round; NotFound for an unknown model or client."""
        selected = list(selected)
        if not selected or len(set(selected)) != len(selected):
            raise ValueError(f"round {round}: selected must be a non-empty list of distinct client ids")
        config_json = _dumps(f"round {round}: config", config)
        with self._transaction() as db:
            self._check_can_open(db, round)
            if not self._has_model(db, model_version):
                raise NotFound(f"round {round}: model version {model_version} does not exist")
            known = {r[0] for r in db.execute("SELECT client_id FROM clients")}
            unknown = [c for c in selected if c not in known]
            if unknown:
                raise NotFound(f"round {round}: selected clients are not enrolled: {unknown}")
            now = self._clock()
            db.execute("INSERT INTO rounds (round, model_version, config, deadline, status, opened_at) "
                       "VALUES (?, ?, ?, ?, 'open', ?)",
                       (round, model_version, config_json, float(deadline), now))
            db.executemany("INSERT INTO round_clients (round, position, client_id) VALUES (?, ?, ?)",
                           [(round, i, c) for i, c in enumerate(selected)])
            self._log(db, round, "opened", {"model_version": model_version, "selected": len(selected)}, now)

    @staticmethod
    def _check_can_open(db: sqlite3.Connection, round: int) -> None:
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round must be an integer >= 0, got {round!r}")
        row = db.execute("SELECT round, status FROM rounds WHERE finished_at IS NULL").fetchone()
        if row is not None:
            raise RoundStateError(f"cannot open round {round}: round {row[0]} is still {row[1]}")
        latest = db.execute("SELECT max(round) FROM rounds").fetchone()[0]
        if latest is not None and round <= latest:
            raise RoundStateError(f"cannot open round {round}: rounds must increase, the latest is {latest}")

    def current_round(self) -> RoundRecord | None:
        """The round that is open or collecting, None if every round is finished."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT * FROM rounds WHERE finished_at IS NULL").fetchone()
            return None if row is None else _round_record(row, self._selected(db, row["round"]))

    def round(self, round: int) -> RoundRecord | None:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT * FROM rounds WHERE round = ?", (round,)).fetchone()
            return None if row is None else _round_record(row, self._selected(db, round))

    @staticmethod
    def _selected(db: sqlite3.Connection, round: int) -> list[str]:
        rows = db.execute("SELECT client_id FROM round_clients WHERE round = ? ORDER BY position", (round,))
        return [r[0] for r in rows]

    def record_update(self, round: int, client_id: str, blob: bytes, num_examples: int,
                      metrics: dict[str, Any]) -> bool:
        """Durably record a client's update for `round`; the first one recorded moves
        the round to "collecting". Returns False, storing nothing, if the round is not
        open or collecting, the client is not selected for it, or it already reported
        (exactly once). ValueError for num_examples <= 0 or a blob that is not bytes."""
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
            raise ValueError(f"client {client_id!r}: num_examples must be an integer > 0, "
                             f"got {num_examples!r}")
        if not isinstance(blob, bytes):
            raise ValueError(f"client {client_id!r}: blob must be bytes, got {type(blob).__name__}")
        metrics_json = _dumps(f"client {client_id!r}: metrics", metrics)
        with self._transaction() as db:
            row = db.execute("SELECT status FROM rounds WHERE round = ?", (round,)).fetchone()
            if row is None or row[0] not in UNFINISHED:
                return False
            if db.execute("SELECT 1 FROM round_clients WHERE round = ? AND client_id = ?",
                          (round, client_id)).fetchone() is None:
                return False
            cursor = db.execute(
                "INSERT INTO updates (round, client_id, blob, sha256, num_examples, metrics, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (round, client_id) DO NOTHING",
                (round, client_id, blob, _digest(blob), num_examples, metrics_json, self._clock()))
            if cursor.rowcount == 0:
                return False
            if row[0] == "open":
                db.execute("UPDATE rounds SET status = 'collecting' WHERE round = ?", (round,))
            return True

    def updates(self, round: int) -> list[UpdateRecord]:
        """A round's recorded updates in arrival order. CorruptRecord if a blob's sha256 does not match."""
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT * FROM updates WHERE round = ? ORDER BY rowid", (round,)).fetchall()
        return [UpdateRecord(r["round"], r["client_id"],
                             _checked(f"round {round}: update of {r['client_id']!r}", r["blob"], r["sha256"]),
                             r["num_examples"], json.loads(r["metrics"]), r["received_at"]) for r in rows]

    def reported(self, round: int) -> list[str]:
        """The clients whose update for `round` is recorded, in arrival order (no blobs read)."""
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT client_id FROM updates WHERE round = ? ORDER BY rowid", (round,))
            return [r[0] for r in rows]

    def finish_round(self, round: int, new_model_version: int, new_model_blob: bytes, metrics: dict[str, Any],
                     state: dict[str, dict[str, Any]] | None = None) -> None:
        """In ONE transaction: publish the new model version, mark the round
        aggregated with its metrics, append "aggregated" to the round log and
        write `state` ({key: dict}, e.g. the server optimizer's) if given.
        RoundStateError if the round is unknown or finished; ModelVersionConflict
        if the version exists or is stale. On any error nothing is written."""
        metrics_json = _dumps(f"round {round}: metrics", metrics)
        with self._transaction() as db:
            self._require_unfinished(db, round, "aggregate")
            self._insert_model(db, new_model_version, new_model_blob, {"round": round, **metrics})
            now = self._clock()
            db.execute("UPDATE rounds SET status = 'aggregated', finished_at = ?, metrics = ?, "
                       "new_model_version = ? WHERE round = ?", (now, metrics_json, new_model_version, round))
            self._log(db, round, "aggregated", {"model_version": new_model_version}, now)
            for key, value in (state or {}).items():
                self._put_state(db, key, value, now)

    def fail_round(self, round: int, reason: str) -> None:
        """Mark the round failed (the global model is unchanged) and log why.
        RoundStateError if the round is unknown or finished."""
        with self._transaction() as db:
            self._require_unfinished(db, round, "fail")
            now = self._clock()
            db.execute("UPDATE rounds SET status = 'failed', finished_at = ?, reason = ? WHERE round = ?",
                       (now, str(reason), round))
            self._log(db, round, "failed", {"reason": str(reason)}, now)

    @staticmethod
    def _require_unfinished(db: sqlite3.Connection, round: int, action: str) -> None:
        row = db.execute("SELECT status FROM rounds WHERE round = ?", (round,)).fetchone()
        if row is None:
            raise RoundStateError(f"cannot {action} round {round}: it was never opened")
        if row[0] not in UNFINISHED:
            raise RoundStateError(f"cannot {action} round {round}: it is already {row[0]}")

    def history(self, last: int | None = None) -> list[RoundRecord]:
        """Every finished (aggregated or failed) round, by round number; only the `last` ones if given."""
        limit = -1 if last is None else max(0, last)
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT * FROM (SELECT * FROM rounds WHERE finished_at IS NOT NULL "
                              "ORDER BY round DESC LIMIT ?) ORDER BY round", (limit,)).fetchall()
            selected: dict[int, list[str]] = {}
            first = rows[0]["round"] if rows else 0
            for r in db.execute("SELECT rc.round, rc.client_id FROM round_clients rc "
                                "JOIN rounds USING (round) WHERE rounds.finished_at IS NOT NULL "
                                "AND rc.round >= ? ORDER BY rc.round, rc.position", (first,)):
                selected.setdefault(r[0], []).append(r[1])
        return [_round_record(r, selected.get(r["round"], [])) for r in rows]

    def round_counts(self) -> dict[str, int]:
        """How many rounds are in each status ({"aggregated": 3, "failed": 1, ...})."""
        with self._transaction(write=False) as db:
            return dict(db.execute("SELECT status, count(*) FROM rounds GROUP BY status ORDER BY status").fetchall())

    def events(self, round: int | None = None) -> list[RoundEvent]:
        """The append-only round log (one round's, or all), oldest first."""
        query = "SELECT round, event, at, detail FROM round_events"
        args: tuple[Any, ...] = ()
        if round is not None:
            query, args = query + " WHERE round = ?", (round,)
        with self._transaction(write=False) as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [RoundEvent(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    @staticmethod
    def _log(db: sqlite3.Connection, round: int, event: str, detail: dict[str, Any], at: float) -> None:
        db.execute("INSERT INTO round_events (round, event, at, detail) VALUES (?, ?, ?, ?)",
                   (round, event, at, json.dumps(detail, sort_keys=True)))

    # -------------------------------------------------------------- state
    def put_state(self, key: str, value: dict[str, Any]) -> None:
        """Store (or replace) a JSON-able dict under `key`."""
        with self._transaction() as db:
            self._put_state(db, key, value, self._clock())

    def _put_state(self, db: sqlite3.Connection, key: str, value: dict[str, Any], now: float) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"state key must be a non-empty string, got {key!r}")
        db.execute("INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                   (key, _dumps(f"state {key!r}", value), now))

    def get_state(self, key: str) -> dict[str, Any] | None:
        """The dict stored under `key`, None if there is none."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])
