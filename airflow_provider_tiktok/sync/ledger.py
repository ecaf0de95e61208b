"""The sync ledger: what a sync staged, what became of each batch, and the sync's own record.

Two warehouse tables, both named from ``ledger_table``: ``<ledger_table>`` holds one row per sync (a
task-instance run), ``<ledger_table>_batches`` one row per staged batch. A batch is staged (committed)
before it is sent, so a killed attempt's retry resends only what TikTok never acknowledged; a batch's
payload is dropped as soon as its fate is final, so hashed identifiers live only as long as a retry
can need them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from enum import Enum
from typing import Protocol

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.audience.prepare import PreparationCounts
from airflow_provider_tiktok.warehouse import BLOB, TableSpec, Warehouse

KEY_COLUMNS = ("dag_id", "task_id", "run_id", "map_index")
_KEY_TYPES = {
    "dag_id": "TEXT NOT NULL",
    "task_id": "TEXT NOT NULL",
    "run_id": "TEXT NOT NULL",
    "map_index": "INTEGER NOT NULL",
}
SYNCS = TableSpec(
    {
        **_KEY_TYPES,
        "status": "TEXT NOT NULL",
        "first_attempt_at": "DOUBLE PRECISION NOT NULL",
        "updated_at": "DOUBLE PRECISION",
        "audience_id": "TEXT",
        "state": "TEXT NOT NULL",
    },
    KEY_COLUMNS,
)
BATCHES = TableSpec(
    {
        **_KEY_TYPES,
        "batch_number": "INTEGER NOT NULL",
        "action": "TEXT",
        "users": "INTEGER NOT NULL",
        "status": "TEXT NOT NULL",
        "error_code": "INTEGER",
        "payload": BLOB,
    },
    (*KEY_COLUMNS, "batch_number"),
)
DEFAULT_LEDGER_RETENTION = timedelta(days=7)


class RequestStats(Protocol):
    def snapshot(self) -> tuple[int, int, int]:
        """(requests, retries, rate limited) so far."""
        ...


class Status(str, Enum):
    """One vocabulary for a sync and its batches (and the results row's ``status``).

    A batch is ``pending`` until TikTok ``acknowledged`` it or it ``errored`` for good. A sync is
    ``staging`` while its users are being frozen into batches (a sync killed then starts again),
    ``pending`` while batches wait, and ends ``finished``, ``failed`` or as a ``dry_run``.
    """

    STAGING = "staging"
    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    ERRORED = "errored"
    FINISHED = "finished"
    FAILED = "failed"
    DRY_RUN = "dry_run"

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        return cls.PENDING if value == "staged" else None  # written by 0.1 ledgers

    @property
    def is_terminal(self) -> bool:
        return self not in (Status.STAGING, Status.PENDING)


@dataclass(frozen=True)
class SyncKey:
    """A sync is one task-instance run: the same key on every retry, so a retry resumes it."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    def values(self) -> tuple:
        return (self.dag_id, self.task_id, self.run_id, self.map_index)


@dataclass
class SyncRecord:
    """A sync's row: its phase, its target, what staging froze, and counters across attempts."""

    status: Status
    first_attempt_at: float
    advertiser_id: str
    audience_id: str | None
    audience_name: str | None
    action: str
    # Several ad accounts: each other account's audience id (None until found, created or shared), by
    # advertiser. Resolved before the first batch and kept in the ledger, so every attempt sends to the same ones.
    other_audiences: dict[str, str | None] = field(default_factory=dict)
    entered: int = 0
    not_synced: dict[str, int] = field(default_factory=dict)
    invalid_by_field: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0  # mirror mode: users whose identifiers were already in the audience
    removed_without_request: int = 0  # mirror mode: departed users whose identifiers others still carry
    attempts: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    duration_seconds: float = 0.0
    active_seconds: float = 0.0
    cpu_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    time_to_first_request_seconds: float | None = None
    lag_histogram: dict[str, int] = field(default_factory=dict)  # freshness: entry -> acknowledgement
    lag_max_seconds: float | None = None

    @classmethod
    def new(
        cls,
        advertiser_id: str,
        audience_id: str | None,
        audience_name: str | None,
        action: str,
        other_advertisers: Iterable[str] = (),
    ) -> SyncRecord:
        others = dict.fromkeys(other_advertisers)
        return cls(Status.STAGING, time.time(), advertiser_id, audience_id, audience_name, action, others)

    @property
    def advertiser_ids(self) -> list[str]:
        """Every ad account of the sync, the primary (``advertiser_id``) first."""
        return [self.advertiser_id, *self.other_audiences]

    @property
    def audience_ids(self) -> dict[str, str | None]:
        """Each ad account's audience id, the primary's first."""
        return {self.advertiser_id: self.audience_id, **self.other_audiences}

    def count_prepared(self, counts: PreparationCounts) -> None:
        """Freeze what preparing the source found: who entered, who cannot be sent and why."""
        self.entered = counts.entered
        self.not_synced = dict(counts.not_synced)
        self.invalid_by_field = dict(counts.invalid_by_field)
        self.coverage = {name: users for name, users in counts.coverage.items() if users}

    def state_json(self) -> str:
        state = asdict(self)
        for column in ("status", "first_attempt_at", "audience_id"):
            state.pop(column)
        return json.dumps(state, sort_keys=True)

    @classmethod
    def from_row(cls, status: str, first_attempt_at: float, audience_id: str | None, state: str) -> SyncRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in json.loads(state).items() if k in known}
        return cls(Status(status), float(first_attempt_at), audience_id=audience_id, **values)


@dataclass(frozen=True)
class BatchOutcome:
    number: int
    users: int
    status: Status
    error_code: int | None = None
    error: str | None = None


@dataclass
class BatchTotals:
    """Users per (batch action, status), and per (action, last error code) for errored batches."""

    batches: int = 0
    users: dict[tuple[str, Status], int] = field(default_factory=dict)
    errored_by_code: dict[tuple[str, str], int] = field(default_factory=dict)
    pending_last_code: int | None = None

    def count(self, status: Status, actions: Iterable[str] | None = None) -> int:
        return sum(n for (action, s), n in self.users.items() if s is status and (actions is None or action in actions))

    def errored(self, actions: Iterable[str] | None = None) -> dict[str, int]:
        codes: dict[str, int] = {}
        for (action, code), users in self.errored_by_code.items():
            if actions is None or action in actions:
                codes[code] = codes.get(code, 0) + users
        return codes


class Ledger:
    """The ledger rows of one sync; every statement is scoped to its key."""

    def __init__(self, warehouse: Warehouse, ledger_table: str, key: SyncKey) -> None:
        self.warehouse = warehouse
        self.syncs_table = ledger_table
        self.batches_table = f"{ledger_table}_batches"
        self.key = key
        self._where = " AND ".join(f"{c} = {warehouse.placeholder}" for c in KEY_COLUMNS)
        self._saving = threading.Lock()  # staging and upload threads both save the record

    def ensure_tables(self) -> None:
        self.warehouse.ensure_table(self.syncs_table, SYNCS, "ledger_table")
        self.warehouse.ensure_table(self.batches_table, BATCHES, "ledger_table (batches)")

    # --- the sync's record ----------------------------------------------------------------

    def load(self) -> SyncRecord | None:
        rows = self.warehouse.query(
            f"SELECT status, first_attempt_at, audience_id, state FROM {self.syncs_table} WHERE {self._where}",
            self.key.values(),
        )
        return SyncRecord.from_row(*rows[0]) if rows else None

    def save(self, record: SyncRecord) -> None:
        with self._saving:
            self._save(record)

    def _save(self, record: SyncRecord) -> None:
        row = {
            **dict(zip(KEY_COLUMNS, self.key.values(), strict=True)),
            "status": record.status.value,
            "first_attempt_at": record.first_attempt_at,
            "updated_at": time.time(),
            "audience_id": record.audience_id,
            "state": record.state_json(),
        }
        self.warehouse.upsert(self.syncs_table, SYNCS, row)

    def forget(self) -> None:
        """Drop this sync's rows: a clear in the Airflow UI starts a fresh sync."""
        self.warehouse.execute(
            (f"DELETE FROM {self.batches_table} WHERE {self._where}", self.key.values()),
            (f"DELETE FROM {self.syncs_table} WHERE {self._where}", self.key.values()),
        )

    def prune(self, retention: timedelta) -> None:
        """Remove every ended sync (of any task using this ledger) older than ``retention``, in two statements."""
        ended = tuple(s.value for s in Status if s.is_terminal)
        old = f"updated_at < {self.warehouse.placeholder} AND status IN ({self.warehouse.placeholders(len(ended))})"
        values = (time.time() - retention.total_seconds(), *ended)
        same_sync = " AND ".join(f"{self.syncs_table}.{c} = {self.batches_table}.{c}" for c in KEY_COLUMNS)
        self.warehouse.execute(
            (
                f"DELETE FROM {self.batches_table} WHERE EXISTS "
                f"(SELECT 1 FROM {self.syncs_table} WHERE {same_sync} AND {self.syncs_table}.{old})",
                values,
            ),
            (f"DELETE FROM {self.syncs_table} WHERE {old}", values),
        )

    # --- batches --------------------------------------------------------------------------

    def stage(self, batches: Iterable[UserBatch]) -> Iterator[UserBatch]:
        """Commit each batch to the ledger, then hand it on: nothing is sent before it is staged."""
        sql = (
            f"INSERT INTO {self.batches_table} ({', '.join(BATCHES.names)}) "
            f"VALUES ({self.warehouse.placeholders(len(BATCHES.names))})"
        )
        for batch in batches:
            row = (
                *self.key.values(),
                batch.number,
                batch.action,
                batch.counted_users,
                Status.PENDING.value,
                None,
                batch.to_bytes(),
            )
            self.warehouse.execute((sql, row))
            yield batch

    def pending_batches(self) -> Iterator[UserBatch]:
        """Unsent batches in order, fetched one at a time so memory stays flat."""
        numbers = self.warehouse.query(
            f"SELECT batch_number FROM {self.batches_table} WHERE {self._where} AND status = "
            f"{self.warehouse.placeholder} ORDER BY batch_number",
            (*self.key.values(), Status.PENDING.value),
        )
        for (number,) in numbers:
            yield self.load_batch(number)

    def load_batch(self, number: int) -> UserBatch:
        [(action, payload)] = self.warehouse.query(
            f"SELECT action, payload FROM {self.batches_table} WHERE {self._where} AND batch_number = "
            f"{self.warehouse.placeholder}",
            (*self.key.values(), number),
        )
        return UserBatch.from_bytes(number, bytes(payload), action)

    def record_outcome(self, outcome: BatchOutcome) -> None:
        """A final fate drops the payload; a retryable failure keeps it and notes the last code."""
        if not outcome.status.is_terminal and outcome.error_code is None:
            return
        ph = self.warehouse.placeholder
        payload = "NULL" if outcome.status.is_terminal else "payload"
        sql = (
            f"UPDATE {self.batches_table} SET status = {ph}, error_code = {ph}, payload = {payload} "
            f"WHERE {self._where} AND batch_number = {ph}"
        )
        self.warehouse.execute((sql, (outcome.status.value, outcome.error_code, *self.key.values(), outcome.number)))

    def error_pending(self, code: int | None) -> None:
        """Every batch still pending errors for good (fatal error or retry window over)."""
        ph = self.warehouse.placeholder
        sql = (
            f"UPDATE {self.batches_table} SET status = {ph}, error_code = COALESCE(error_code, {ph}), payload = NULL "
            f"WHERE {self._where} AND status = {ph}"
        )
        self.warehouse.execute((sql, (Status.ERRORED.value, code, *self.key.values(), Status.PENDING.value)))

    def totals(self) -> BatchTotals:
        """Users per batch action and status, and errored/pending users by last error code."""
        rows = self.warehouse.query(
            f"SELECT action, status, error_code, COUNT(*), SUM(users) FROM {self.batches_table} "
            f"WHERE {self._where} GROUP BY action, status, error_code",
            self.key.values(),
        )
        totals = BatchTotals()
        for action_value, status_value, code, batches, users_sum in rows:
            action, status, users = action_value or "", Status(status_value), int(users_sum or 0)
            totals.batches += int(batches)
            totals.users[action, status] = totals.users.get((action, status), 0) + users
            if status is Status.ERRORED:
                where = (action, str(code))
                totals.errored_by_code[where] = totals.errored_by_code.get(where, 0) + users
            elif code is not None:
                totals.pending_last_code = int(code)
        return totals


class AttemptCounters:
    """This attempt's request counters added to the record's totals, saved now and then as the attempt
    goes, so the requests of an attempt that is killed still show in the results."""

    def __init__(self, stats: RequestStats, record: SyncRecord, ledger: Ledger, every_seconds: float = 2.0) -> None:
        self.stats, self.record, self.ledger, self.every_seconds = stats, record, ledger, every_seconds
        self.base = (record.requests, record.retries, record.rate_limited)
        self.saved_at = time.monotonic()

    def add_to_record(self) -> None:
        totals = (base + more for base, more in zip(self.base, self.stats.snapshot(), strict=True))
        self.record.requests, self.record.retries, self.record.rate_limited = totals

    def save_now_and_then(self) -> None:
        if time.monotonic() - self.saved_at >= self.every_seconds:
            self.saved_at = time.monotonic()
            self.add_to_record()
            self.ledger.save(self.record)
