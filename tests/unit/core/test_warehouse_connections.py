"""An upload attempt's ledger statements share one warehouse connection, and still commit each outcome."""

from __future__ import annotations

import hashlib
import sqlite3

import pyarrow as pa
import pytest
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_provider_tiktok import warehouse as warehouse_module
from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.sync.upload import BatchOutcome, BatchStatus
from airflow_provider_tiktok.warehouse import SyncKey, Warehouse

LEDGER = "ledger"
KEY = SyncKey("dag", "task", "run", -1)
BATCHES = 30


class CountingSqliteHook(DbApiHook):
    """A real SQLite DB-API hook that counts the connections it opens."""

    conn_name_attr = "sqlite_conn_id"
    placeholder = "?"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.opened = 0

    @property
    def dialect_name(self) -> str:
        return "sqlite"

    def get_conn(self) -> sqlite3.Connection:
        self.opened += 1
        return sqlite3.connect(self.path)


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    hook = CountingSqliteHook(str(tmp_path / "warehouse.db"))

    class Connection:
        def get_hook(self):
            return hook

    monkeypatch.setattr(warehouse_module.BaseHook, "get_connection", lambda conn_id: Connection())
    found = Warehouse("warehouse")
    found.ensure_ledger(LEDGER)
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(BATCHES)]
    found.stage_batches(
        LEDGER, KEY, (UserBatch(n + 1, ("EMAIL_SHA256",), (pa.array([d]),)) for n, d in enumerate(digests))
    )
    return found, hook


def send_all(warehouse: Warehouse) -> None:
    for batch in warehouse.iter_staged_batches(LEDGER, KEY):
        warehouse.record_outcome(LEDGER, KEY, BatchOutcome(batch.number, len(batch), BatchStatus.ACKNOWLEDGED))


def test_an_attempt_inside_one_connection_opens_one_and_commits_every_outcome(warehouse):
    found, hook = warehouse
    before = hook.opened
    with found.one_connection():
        send_all(found)
    assert hook.opened - before == 1
    with sqlite3.connect(hook.path) as check:  # committed: another connection sees every outcome
        statuses = check.execute(f"SELECT status, COUNT(*) FROM {LEDGER}_batches GROUP BY status").fetchall()
    assert statuses == [(BatchStatus.ACKNOWLEDGED.value, BATCHES)]


def test_outside_the_block_each_statement_opens_its_own_connection(warehouse):
    found, hook = warehouse
    before = hook.opened
    send_all(found)
    assert hook.opened - before == 1 + 2 * BATCHES  # the list, then a read and an update per batch
