"""The one place that talks SQL to the warehouse: streamed source reads, the results table, the ledger.

Works with any common-sql connection (SQLite and Postgres tested). Table names are validated
identifiers; values always travel as bound parameters.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.sync.upload import BatchOutcome, BatchStatus

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

#: Results table: one row per task run (dag, task, run, map index), upserted after every attempt.
RESULT_COLUMNS: dict[str, str] = {
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
    "not_synced": "INTEGER",
    "pending": "INTEGER",
    "errored": "INTEGER",
    "not_synced_by_reason": "TEXT",
    "errored_by_reason": "TEXT",
    "requests": "INTEGER",
    "rate_limited": "INTEGER",
    "retries": "INTEGER",
    "attempts": "INTEGER",
    "duration_seconds": "DOUBLE PRECISION",
    "users_per_second": "DOUBLE PRECISION",
    "first_attempt_at": "TEXT",
    "updated_at": "TEXT",
}
KEY_COLUMNS = ("dag_id", "task_id", "run_id", "map_index")


@dataclass(frozen=True)
class SyncKey:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int

    def values(self) -> tuple:
        return (self.dag_id, self.task_id, self.run_id, self.map_index)


@dataclass
class SyncRecord:
    """A sync's row in the ledger: its phase and what was frozen when its users were staged."""

    status: str  # staging | staged | finished | failed
    first_attempt_at: float
    audience_id: str | None
    state: dict[str, Any]


def check_identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name or ""):
        raise TikTokConfigurationError(f"{what} {name!r} is not a plain table name (letters, digits, _, schema.)")
    return name


class Warehouse:
    def __init__(self, conn_id: str) -> None:
        hook = BaseHook.get_connection(conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise TikTokConfigurationError(
                f"Connection {conn_id!r} is not a SQL (common-sql) connection; got {type(hook).__name__}."
            )
        self.conn_id = conn_id
        self.hook = hook
        self.dialect = hook.dialect_name
        self.blob_type = "BYTEA" if self.dialect.startswith("postgres") else "BLOB"
        self.ph = hook.placeholder
        self._shared = threading.local()
        if self.dialect == "sqlite":
            # Staging writes the ledger while the source query is still streaming from the same file;
            # in SQLite's default journal mode that open read would lock every write out.
            self.query("PRAGMA journal_mode=WAL")

    # --- source ------------------------------------------------------------------------------

    def read_chunks(
        self, sql: str, chunk_size: int, parameters: dict[str, Any] | None = None
    ) -> Iterator[pd.DataFrame]:
        """Stream a query in DataFrame chunks (server-side cursor where the driver has one).

        ``:name`` placeholders are bound by SQLAlchemy, so one query text works on every warehouse.
        """
        engine = self.hook.get_sqlalchemy_engine()
        with engine.connect().execution_options(stream_results=True) as connection:
            yield from pd.read_sql(sqlalchemy.text(sql), connection, params=parameters or {}, chunksize=chunk_size)

    @contextmanager
    def one_connection(self) -> Iterator[None]:
        """Within the block, this thread's statements share one connection: an upload attempt reads
        and updates the ledger once per batch, and opening a connection each time costs more than the
        statement (a login on Postgres). A failing statement ends the block, so an aborted transaction
        is never reused."""
        with closing(self.hook.get_conn()) as conn:
            self._shared.conn = conn
            try:
                yield
            finally:
                self._shared.conn = None

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        shared = getattr(self._shared, "conn", None)
        if shared is not None:
            yield shared
            return
        with closing(self.hook.get_conn()) as conn:
            yield conn

    def query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._connection() as conn, closing(conn.cursor()) as cursor:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall())

    def _execute(self, statements: Iterable[tuple[str, Iterable[tuple] | tuple]], many: bool = False) -> None:
        with self._connection() as conn:
            with closing(conn.cursor()) as cursor:
                for sql, params in statements:
                    if many:
                        cursor.executemany(sql, list(params))
                    else:
                        cursor.execute(sql, params)
            conn.commit()

    # --- results table -----------------------------------------------------------------------

    def ensure_results_table(self, table: str) -> None:
        check_identifier(table, "results_table")
        columns = ", ".join(f"{name} {kind}" for name, kind in RESULT_COLUMNS.items())
        self._execute([(f"CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY ({', '.join(KEY_COLUMNS)}))", ())])

    def upsert_result(self, table: str, row: dict[str, Any]) -> None:
        names = list(RESULT_COLUMNS)
        values = tuple(_sql_value(row.get(name)) for name in names)
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in KEY_COLUMNS)
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([self.ph] * len(names))}) "
            f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates}"
        )
        self._execute([(sql, values)])

    # --- ledger ------------------------------------------------------------------------------

    def ensure_ledger(self, table: str) -> None:
        check_identifier(table, "ledger_table")
        keys = "dag_id TEXT NOT NULL, task_id TEXT NOT NULL, run_id TEXT NOT NULL, map_index INTEGER NOT NULL"
        self._execute(
            [
                (
                    f"CREATE TABLE IF NOT EXISTS {table} ({keys}, status TEXT NOT NULL, "
                    f"first_attempt_at DOUBLE PRECISION NOT NULL, audience_id TEXT, state TEXT NOT NULL, "
                    f"PRIMARY KEY (dag_id, task_id, run_id, map_index))",
                    (),
                ),
                (
                    f"CREATE TABLE IF NOT EXISTS {table}_batches ({keys}, batch_number INTEGER NOT NULL, "
                    f"users INTEGER NOT NULL, status TEXT NOT NULL, error_code INTEGER, payload {self.blob_type}, "
                    f"PRIMARY KEY (dag_id, task_id, run_id, map_index, batch_number))",
                    (),
                ),
            ]
        )

    def _where_key(self) -> str:
        return " AND ".join(f"{c} = {self.ph}" for c in KEY_COLUMNS)

    def load_sync(self, table: str, key: SyncKey) -> SyncRecord | None:
        rows = self.query(
            f"SELECT status, first_attempt_at, audience_id, state FROM {table} WHERE {self._where_key()}",
            key.values(),
        )
        if not rows:
            return None
        status, first, audience_id, state = rows[0]
        return SyncRecord(status, float(first), audience_id, json.loads(state))

    def save_sync(self, table: str, key: SyncKey, record: SyncRecord) -> None:
        sql = (
            f"INSERT INTO {table} (dag_id, task_id, run_id, map_index, status, first_attempt_at, audience_id, state) "
            f"VALUES ({', '.join([self.ph] * 8)}) ON CONFLICT (dag_id, task_id, run_id, map_index) DO UPDATE SET "
            "status = excluded.status, first_attempt_at = excluded.first_attempt_at, "
            "audience_id = excluded.audience_id, state = excluded.state"
        )
        values = (
            *key.values(),
            record.status,
            record.first_attempt_at,
            record.audience_id,
            json.dumps(record.state),
        )
        self._execute([(sql, values)])

    def forget_sync(self, table: str, key: SyncKey) -> None:
        where = self._where_key()
        self._execute(
            [
                (f"DELETE FROM {table}_batches WHERE {where}", key.values()),
                (f"DELETE FROM {table} WHERE {where}", key.values()),
            ]
        )

    def stage_batches(self, table: str, key: SyncKey, batches: Iterable[UserBatch], rows_per_write: int = 20) -> None:
        sql = (
            f"INSERT INTO {table}_batches (dag_id, task_id, run_id, map_index, batch_number, users, status, payload) "
            f"VALUES ({', '.join([self.ph] * 8)})"
        )
        with self._connection() as conn, closing(conn.cursor()) as cursor:
            buffered: list[tuple] = []
            for batch in batches:
                buffered.append((*key.values(), batch.number, len(batch), BatchStatus.STAGED.value, batch.to_bytes()))
                if len(buffered) >= rows_per_write:
                    cursor.executemany(sql, buffered)
                    buffered.clear()
            if buffered:
                cursor.executemany(sql, buffered)
            conn.commit()

    def iter_staged_batches(self, table: str, key: SyncKey) -> Iterator[UserBatch]:
        """Unsent batches in order, fetched one at a time so memory stays flat."""
        numbers = self.query(
            f"SELECT batch_number FROM {table}_batches WHERE {self._where_key()} AND status = {self.ph} "
            "ORDER BY batch_number",
            (*key.values(), BatchStatus.STAGED.value),
        )
        for (number,) in numbers:
            [(payload,)] = self.query(
                f"SELECT payload FROM {table}_batches WHERE {self._where_key()} AND batch_number = {self.ph}",
                (*key.values(), number),
            )
            yield UserBatch.from_bytes(number, bytes(payload))

    def record_outcome(self, table: str, key: SyncKey, outcome: BatchOutcome) -> None:
        if not outcome.status.is_terminal and outcome.error_code is None:
            return
        sql = (
            f"UPDATE {table}_batches SET status = {self.ph}, error_code = {self.ph} "
            f"WHERE {self._where_key()} AND batch_number = {self.ph}"
        )
        self._execute([(sql, (outcome.status.value, outcome.error_code, *key.values(), outcome.number))])

    def batch_totals(self, table: str, key: SyncKey) -> dict[str, Any]:
        """Users per batch status, and errored/pending users by last error code."""
        rows = self.query(
            f"SELECT status, error_code, COUNT(*), SUM(users) FROM {table}_batches WHERE {self._where_key()} "
            "GROUP BY status, error_code",
            key.values(),
        )
        totals: dict[str, Any] = {
            "batches": 0,
            "by_status": {},
            "errored_by_code": {},
            "pending_last_code": None,
        }
        for status, code, batches, users in rows:
            totals["batches"] += int(batches)
            totals["by_status"][status] = totals["by_status"].get(status, 0) + int(users or 0)
            if status == BatchStatus.ERRORED.value:
                totals["errored_by_code"][str(code)] = int(users or 0)
            elif code is not None:
                totals["pending_last_code"] = int(code)
        return totals

    def mark_staged_errored(self, table: str, key: SyncKey, code: int | None) -> None:
        sql = (
            f"UPDATE {table}_batches SET status = {self.ph}, error_code = COALESCE(error_code, {self.ph}) "
            f"WHERE {self._where_key()} AND status = {self.ph}"
        )
        self._execute([(sql, (BatchStatus.ERRORED.value, code, *key.values(), BatchStatus.STAGED.value))])


def _sql_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value
