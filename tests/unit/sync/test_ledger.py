"""The ledger: one connection per upload attempt, payloads dropped once final, typed records, pruning."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from datetime import timedelta

import pyarrow as pa
import pytest
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_provider_tiktok import warehouse as warehouse_module
from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import TikTokConfigurationError, TikTokWarehouseError
from airflow_provider_tiktok.sync.ledger import BatchOutcome, Ledger, Status, SyncKey, SyncRecord
from airflow_provider_tiktok.sync.results import RESULTS, ResultsTable
from airflow_provider_tiktok.warehouse import Warehouse

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
    found = Ledger(Warehouse("warehouse"), LEDGER, KEY)
    found.ensure_tables()
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(BATCHES)]
    staged = found.stage(UserBatch(n + 1, ("EMAIL_SHA256",), (pa.array([d]),)) for n, d in enumerate(digests))
    assert len(list(staged)) == BATCHES
    return found, hook


def send_all(ledger: Ledger) -> None:
    for batch in ledger.pending_batches():
        ledger.record_outcome(BatchOutcome(batch.number, len(batch), Status.ACKNOWLEDGED))


def test_an_attempt_inside_one_connection_opens_one_and_commits_every_outcome(warehouse):
    found, hook = warehouse
    before = hook.opened
    with found.warehouse.one_connection():
        send_all(found)
    assert hook.opened - before == 1
    with sqlite3.connect(hook.path) as check:  # committed: another connection sees every outcome
        statuses = check.execute(f"SELECT status, COUNT(*) FROM {LEDGER}_batches GROUP BY status").fetchall()
    assert statuses == [(Status.ACKNOWLEDGED.value, BATCHES)]


def test_outside_the_block_each_statement_opens_its_own_connection(warehouse):
    found, hook = warehouse
    before = hook.opened
    send_all(found)
    assert hook.opened - before == 1 + 2 * BATCHES  # the list, then a read and an update per batch


def payloads(path: str) -> list[tuple]:
    with sqlite3.connect(path) as check:
        return check.execute(f"SELECT batch_number, payload IS NULL FROM {LEDGER}_batches ORDER BY 1").fetchall()


def test_a_final_fate_drops_the_payload_and_a_retryable_one_keeps_it(warehouse):
    ledger, hook = warehouse
    ledger.record_outcome(BatchOutcome(1, 1, Status.ACKNOWLEDGED))
    ledger.record_outcome(BatchOutcome(2, 1, Status.ERRORED, 40062))
    ledger.record_outcome(BatchOutcome(3, 1, Status.PENDING, 40100))
    dropped = dict(payloads(hook.path))
    assert (dropped[1], dropped[2], dropped[3], dropped[4]) == (1, 1, 0, 0)
    ledger.error_pending(40105)
    assert all(is_null for _, is_null in payloads(hook.path))
    totals = ledger.totals()
    assert totals.count(Status.ACKNOWLEDGED) == 1 and totals.errored() == {"40062": 1, "40100": 1, "40105": 27}


def test_the_record_round_trips_typed_and_reads_a_01_ledger(warehouse):
    ledger, _ = warehouse
    record = SyncRecord.new("7001", "55", "VIP", "add")
    record.requests, record.phase_seconds = 12, {"upload": 1.5}
    ledger.save(record)
    loaded = ledger.load()
    assert loaded == record and loaded.status is Status.STAGING
    assert Status("staged") is Status.PENDING  # what 0.1 wrote for a sync waiting to resume


def test_ended_syncs_older_than_the_retention_are_pruned_with_their_batches(warehouse, monkeypatch):
    ledger, hook = warehouse
    record = SyncRecord.new("7001", "55", "VIP", "add")
    record.status = Status.FINISHED
    ledger.save(record)
    other = Ledger(ledger.warehouse, LEDGER, SyncKey("dag", "task", "other-run", -1))
    running = SyncRecord.new("7001", "55", "VIP", "add")
    running.status = Status.PENDING
    other.save(running)
    later = time.time() + timedelta(days=8).total_seconds()
    monkeypatch.setattr(time, "time", lambda: later)
    ledger.prune(timedelta(days=7))
    with sqlite3.connect(hook.path) as check:
        left = check.execute(f"SELECT run_id, status FROM {LEDGER}").fetchall()
        batches = check.execute(f"SELECT COUNT(*) FROM {LEDGER}_batches").fetchone()[0]
    assert left == [("other-run", "pending")] and batches == 0


def test_a_table_that_is_not_ours_is_refused_naming_table_and_columns(warehouse):
    ledger, hook = warehouse
    with sqlite3.connect(hook.path) as setup:
        setup.execute("CREATE TABLE results_elsewhere (id INTEGER PRIMARY KEY, note TEXT)")
    results = ResultsTable(ledger.warehouse, "results_elsewhere")
    with pytest.raises(TikTokConfigurationError, match=r"results_table 'results_elsewhere'.*\['dag_id'"):
        results.ensure()


def test_an_older_results_table_of_ours_gains_the_new_columns(warehouse):
    ledger, hook = warehouse
    with sqlite3.connect(hook.path) as setup:
        setup.execute(
            "CREATE TABLE results_01 (dag_id TEXT, task_id TEXT, run_id TEXT, map_index INTEGER, entered INTEGER, "
            "PRIMARY KEY (dag_id, task_id, run_id, map_index))"
        )
    ResultsTable(ledger.warehouse, "results_01").ensure()
    with sqlite3.connect(hook.path) as check:
        columns = {row[1] for row in check.execute("PRAGMA table_info(results_01)")}
    assert set(RESULTS.names) <= columns


def test_a_table_whose_own_constraints_refuse_our_row_stops_the_sync_at_launch(warehouse):
    ledger, hook = warehouse
    columns = ", ".join(f"{name} {kind}" for name, kind in RESULTS.columns.items())
    with sqlite3.connect(hook.path) as setup:
        setup.execute(
            f"CREATE TABLE results_owned ({columns}, owner TEXT NOT NULL, "
            "PRIMARY KEY (dag_id, task_id, run_id, map_index))"
        )
    results = ResultsTable(ledger.warehouse, "results_owned")
    results.ensure()  # our columns are all there
    with pytest.raises(TikTokConfigurationError, match=r"results_table 'results_owned' refused .*owner"):
        results.open_row(KEY, SyncRecord.new("7001", None, "VIP", "add"))


def test_a_driver_error_becomes_one_retryable_line_naming_the_warehouse(tmp_path, monkeypatch):
    not_a_database = tmp_path / "junk.db"
    not_a_database.write_bytes(b"this is not sqlite" * 100)
    hook = CountingSqliteHook(str(not_a_database))

    class Connection:
        def get_hook(self):
            return hook

    monkeypatch.setattr(warehouse_module.BaseHook, "get_connection", lambda conn_id: Connection())
    with pytest.raises(TikTokWarehouseError) as caught:
        Warehouse("warehouse")
    assert str(caught.value) == "Warehouse 'warehouse': DatabaseError: file is not a database"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
