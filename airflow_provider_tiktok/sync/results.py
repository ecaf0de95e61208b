"""What a sync reports: its metrics from the ledger, the results-table row, XCom and the one-line summary.

The results table's columns are defined once (``RESULTS``): its DDL, its check and its row come from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from airflow_provider_tiktok.audience.metrics import SyncMetrics
from airflow_provider_tiktok.exceptions import TikTokConfigurationError, TikTokError, TikTokWarehouseError
from airflow_provider_tiktok.sync.ledger import KEY_COLUMNS, BatchTotals, Status, SyncKey, SyncRecord
from airflow_provider_tiktok.sync.timing import lag_percentile
from airflow_provider_tiktok.warehouse import TableSpec, Warehouse

PHASES = ("read", "prepare", "plan", "stage", "upload", "report")
MIRROR = "mirror"

#: One row per sync (task-instance run), upserted after every attempt.
RESULTS = TableSpec(
    {
        "dag_id": "TEXT NOT NULL",
        "task_id": "TEXT NOT NULL",
        "run_id": "TEXT NOT NULL",
        "map_index": "INTEGER NOT NULL",
        "advertiser_id": "TEXT",
        "audience_id": "TEXT",
        "audience_name": "TEXT",
        "action": "TEXT",
        "status": "TEXT",
        "entered": "INTEGER",
        "synced": "INTEGER",
        "unchanged": "INTEGER",
        "not_synced": "INTEGER",
        "pending": "INTEGER",
        "errored": "INTEGER",
        "removed": "INTEGER",
        "removals_pending": "INTEGER",
        "removals_errored": "INTEGER",
        "not_synced_by_reason": "TEXT",
        "errored_by_reason": "TEXT",
        "coverage": "TEXT",
        "requests": "INTEGER",
        "rate_limited": "INTEGER",
        "retries": "INTEGER",
        "attempts": "INTEGER",
        "duration_seconds": "DOUBLE PRECISION",
        "users_per_second": "DOUBLE PRECISION",
        "active_seconds": "DOUBLE PRECISION",
        "cpu_seconds": "DOUBLE PRECISION",
        "time_to_first_request_seconds": "DOUBLE PRECISION",
        "lag_p50_seconds": "DOUBLE PRECISION",
        "lag_p95_seconds": "DOUBLE PRECISION",
        "lag_max_seconds": "DOUBLE PRECISION",
        **{f"{phase}_seconds": "DOUBLE PRECISION" for phase in PHASES},
        "first_attempt_at": "TEXT",
        "updated_at": "TEXT",
        "advertiser_ids": "TEXT",  # every ad account, comma-separated, the primary (advertiser_id) first
        "audience_ids": "TEXT",  # JSON {advertiser: audience id}
    },
    KEY_COLUMNS,
)


#: Optional: one row per user of a sync that was not synced, by user key and reason, never an identifier.
REJECTS = TableSpec(
    {
        "dag_id": "TEXT NOT NULL",
        "task_id": "TEXT NOT NULL",
        "run_id": "TEXT NOT NULL",
        "map_index": "INTEGER NOT NULL",
        "user_key": "TEXT",
        "reason": "TEXT NOT NULL",
        "field": "TEXT",
    },
    KEY_COLUMNS,
    unique=False,
)


def metrics_of(record: SyncRecord, totals: BatchTotals) -> SyncMetrics:
    """The sync's numbers: what staging froze plus each batch's fate; refuses numbers that lose a user.

    In mirror mode only ``add`` batches carry entered users; ``remove`` batches are reported beside them.
    """
    entering, removing = (["add"], ["remove"]) if record.action == MIRROR else (None, [])
    metrics = SyncMetrics(
        entered=record.entered,
        synced=totals.count(Status.ACKNOWLEDGED, entering),
        unchanged=record.unchanged,
        pending=totals.count(Status.PENDING, entering),
        not_synced=Counter(record.not_synced),
        errored=Counter({f"api_error_{code}": users for code, users in totals.errored(entering).items()}),
        invalid_by_field=Counter(record.invalid_by_field),
        coverage=dict(record.coverage),
        removed=totals.count(Status.ACKNOWLEDGED, removing) + record.removed_without_request,
        removals_pending=totals.count(Status.PENDING, removing),
        removals_errored=totals.count(Status.ERRORED, removing),
        requests=record.requests,
        rate_limited=record.rate_limited,
        retries=record.retries,
        attempts=record.attempts,
        batches_total=totals.batches,
        duration_seconds=record.duration_seconds,
        active_seconds=record.active_seconds,
        cpu_seconds=record.cpu_seconds,
        time_to_first_request_seconds=record.time_to_first_request_seconds,
        phase_seconds=dict(record.phase_seconds),
        lag_p50_seconds=lag_percentile(record.lag_histogram, 0.5),
        lag_p95_seconds=lag_percentile(record.lag_histogram, 0.95),
        lag_max_seconds=record.lag_max_seconds,
    )
    metrics.check_invariant()
    return metrics


def summary(metrics: SyncMetrics) -> str:
    """The final log line: the outcome of every user, the requests it took, and where the time went."""
    phases = " ".join(f"{p}={metrics.phase_seconds[p]:.1f}s" for p in PHASES if p in metrics.phase_seconds)
    return (
        f"entered={metrics.entered} synced={metrics.synced} "
        f"{f'unchanged={metrics.unchanged} ' if metrics.unchanged else ''}"
        f"{f'removed={metrics.removed} ' if metrics.removed else ''}"
        f"not_synced={metrics.not_synced_total} "
        f"{dict(metrics.not_synced) or ''} pending={metrics.pending} errored={metrics.errored_total} "
        f"{dict(metrics.errored) or ''} requests={metrics.requests} rate_limited={metrics.rate_limited} "
        f"retries={metrics.retries} attempts={metrics.attempts} {phases}"
    ).replace("  ", " ")


def xcom_value(metrics: SyncMetrics, record: SyncRecord) -> dict[str, Any]:
    return metrics.as_dict() | {
        "audience_id": record.audience_id,
        "audience_name": record.audience_name,
        "advertiser_id": record.advertiser_id,
        "advertiser_ids": record.advertiser_ids,
        "audience_ids": record.audience_ids,
    }


class ResultsTable:
    def __init__(self, warehouse: Warehouse, table: str) -> None:
        self.warehouse = warehouse
        self.table = table

    def ensure(self) -> None:
        self.warehouse.ensure_table(self.table, RESULTS, "results_table")

    def open_row(self, key: SyncKey, record: SyncRecord) -> None:
        """Write the row a new sync will fill, before anything is sent: a table whose own constraints refuse
        it (a NOT NULL column of its own) stops the sync now, not after the whole upload."""
        try:
            self.write(key, record, metrics_of(record, BatchTotals()), Status.STAGING)
        except TikTokWarehouseError as err:
            if err.integrity:
                raise TikTokConfigurationError(
                    f"results_table {self.table!r} refused this sync's row ({err}); point results_table at a "
                    "table of its own."
                ) from None
            raise

    @contextmanager
    def failed_if_raises(self, key: SyncKey, record: SyncRecord) -> Iterator[None]:
        """Launch checks after ``open_row``: a refusal leaves the row ``failed``, not ``staging``."""
        try:
            yield
        except TikTokError:
            self.write_failed(key, record, BatchTotals())
            raise

    def write_failed(self, key: SyncKey, record: SyncRecord, totals: BatchTotals) -> None:
        """The row of a sync cut short by an error; a warehouse that cannot take it either leaves it to that
        error, which the caller raises."""
        with suppress(TikTokError):
            self.write(key, record, metrics_of(record, totals), Status.FAILED)

    def write(self, key: SyncKey, record: SyncRecord, metrics: SyncMetrics, status: Status) -> None:
        self.warehouse.upsert(self.table, RESULTS, result_row(key, record, metrics, status))


def result_row(key: SyncKey, record: SyncRecord, metrics: SyncMetrics, status: Status) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(KEY_COLUMNS, key.values(), strict=True))
    row.update(
        advertiser_id=record.advertiser_id,
        audience_id=record.audience_id,
        audience_name=record.audience_name,
        action=record.action,
        status=status.value,
        entered=metrics.entered,
        synced=metrics.synced,
        unchanged=metrics.unchanged,
        not_synced=metrics.not_synced_total,
        pending=metrics.pending,
        errored=metrics.errored_total,
        removed=metrics.removed,
        removals_pending=metrics.removals_pending,
        removals_errored=metrics.removals_errored,
        not_synced_by_reason=dict(metrics.not_synced),
        errored_by_reason=dict(metrics.errored),
        coverage=dict(metrics.coverage),
        requests=metrics.requests,
        rate_limited=metrics.rate_limited,
        retries=metrics.retries,
        attempts=metrics.attempts,
        duration_seconds=round(metrics.duration_seconds, 3),
        users_per_second=metrics.users_per_second,
        active_seconds=round(metrics.active_seconds, 3),
        cpu_seconds=round(metrics.cpu_seconds, 3),
        time_to_first_request_seconds=metrics.time_to_first_request_seconds,
        lag_p50_seconds=metrics.lag_p50_seconds,
        lag_p95_seconds=metrics.lag_p95_seconds,
        lag_max_seconds=metrics.lag_max_seconds,
        first_attempt_at=_iso(record.first_attempt_at),
        updated_at=_iso(datetime.now(tz=timezone.utc).timestamp()),
        advertiser_ids=",".join(record.advertiser_ids),
        audience_ids=record.audience_ids,
    )
    row.update({f"{phase}_seconds": round(seconds, 3) for phase, seconds in metrics.phase_seconds.items()})
    return row


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


class RejectsTable:
    """Where data teams find which users could not be sent and why, to fix their data."""

    def __init__(self, warehouse: Warehouse, table: str, key: SyncKey) -> None:
        self.warehouse, self.table, self.key = warehouse, table, key
        self._where = " AND ".join(f"{c} = {warehouse.placeholder}" for c in KEY_COLUMNS)

    def ensure(self) -> None:
        self.warehouse.ensure_table(self.table, REJECTS, "rejects_table")

    def forget(self) -> None:
        """Staging starts afresh (a first attempt, a clear, or staging killed half-way)."""
        self.warehouse.execute((f"DELETE FROM {self.table} WHERE {self._where}", self.key.values()))

    def append(self, rejects: pa.Table) -> None:
        """One chunk's rejects in one statement batch; never row by row."""
        if not rejects.num_rows:
            return
        sql = f"INSERT INTO {self.table} ({', '.join(REJECTS.names)}) VALUES ({self.warehouse.placeholders(7)})"
        columns = [rejects.column(name).to_pylist() for name in ("user_key", "reason", "field")]
        self.warehouse.execute_many(sql, ((*self.key.values(), *row) for row in zip(*columns, strict=True)))
