"""Several ad accounts in one sync: the uploaders reach every account, the ledger keeps their audiences,
the results row and XCom name them all (requests-mock for TikTok, real SQLite for the warehouse)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.lineage import announce_refresh, audience_asset_uri, sync_lineage
from airflow_provider_tiktok.sync.ledger import BatchTotals, Ledger, Status, SyncKey, SyncRecord
from airflow_provider_tiktok.sync.results import ResultsTable, metrics_of, xcom_value
from airflow_provider_tiktok.sync.upload import uploader_for
from airflow_provider_tiktok.warehouse import Warehouse
from tests.unit.sync.conftest import BASE, quick_retry_hook

PRIMARY, SECOND, THIRD = "7001", "7002", "7003"
KEY = SyncKey("dag", "task", "run", -1)


def envelope(data=None, code=0, message="OK"):
    return {"code": code, "message": message, "request_id": "req-1", "data": data or {}}


def emails(number: int, users: range) -> UserBatch:
    digests = [hashlib.sha256(f"u{n}@x.io".encode()).hexdigest() for n in users]
    return UserBatch(number, ("EMAIL_SHA256",), (pa.array(digests),))


@pytest.fixture
def hook(monkeypatch):
    return quick_retry_hook(monkeypatch, PRIMARY)


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    return Warehouse("warehouse")


def test_segment_creates_each_accounts_audience_then_sends_one_request_per_batch_to_all(hook, requests_mock):
    """Audience names per account: 7001 -> 55 (created), 7002 -> 66 (exists), 7003 -> 77 (created)."""
    created_ids = {PRIMARY: "55", THIRD: "77"}
    listings = {a: [[], [{"audience_id": created_ids[a], "name": "vip"}]] for a in created_ids}

    def listing(request, _):
        pages = listings[request.qs["advertiser_id"][0]]
        return envelope({"list": pages.pop(0) if len(pages) > 1 else pages[0], "page_info": {"total_page": 1}})

    requests_mock.get(BASE + "dmp/custom_audience/list/", json=listing)
    created = requests_mock.post(
        BASE + "segment/audience/",
        json=lambda request, _: envelope({"audience_id": created_ids[request.json()["advertiser_id"]]}),
    )
    mapping = requests_mock.post(BASE + "segment/mapping/", json=envelope())
    others = {SECOND: "66", THIRD: None}  # 7002's audience was found at launch
    uploader = uploader_for("segment", hook, PRIMARY, ("EMAIL_SHA256",), others)
    assert uploader.create_audience("vip", emails(1, range(3))) == "55"
    uploader.reach_other_accounts("vip", "55")  # what the sync runs right after creating
    assert others == {SECOND: "66", THIRD: "77"}  # filled in place: the record the ledger saves
    assert [r.json()["advertiser_id"] for r in created.request_history] == [PRIMARY, THIRD]
    for number in (1, 2):
        uploader.send(emails(number, range(number * 10, number * 10 + 3)), "55", "add")
    assert mapping.call_count == 2  # one request a batch, as with one account
    body = mapping.last_request.json()
    assert body["advertiser_ids"] == [PRIMARY, SECOND, THIRD]
    assert {tuple(cell["audience_ids"]) for [cell] in body["batch_data"]} == {("55", "66", "77")}


def test_one_account_sends_exactly_what_it_always_sent(hook, requests_mock):
    mapping = requests_mock.post(BASE + "segment/mapping/", json=envelope())
    uploader_for("segment", hook, PRIMARY, ("EMAIL_SHA256",)).send(emails(1, range(2)), "55", "remove")
    body = mapping.last_request.json()
    assert (body["advertiser_ids"], body["action"]) == ([PRIMARY], "delete")
    assert [cell["audience_ids"] for [cell] in body["batch_data"]] == [["55"], ["55"]]


def test_file_path_shares_the_primarys_audience_once_and_a_repeat_sends_nothing(hook, requests_mock):
    requests_mock.get(
        BASE + "dmp/custom_audience/list/", json=envelope({"list": [{"audience_id": "55", "name": "vip"}]})
    )
    share = requests_mock.post(BASE + "dmp/custom_audience/share/", json=envelope())
    others: dict[str, str | None] = {SECOND: None, THIRD: None}
    uploader = uploader_for("file", hook, PRIMARY, ("EMAIL_SHA256",), others)
    assert uploader.create_audience("vip", emails(1, range(3))) == "55"  # found: nothing uploaded
    assert share.call_count == 0  # creating touches the primary only
    uploader.reach_other_accounts("vip", "55")
    assert share.call_count == 1
    assert share.last_request.json() == {
        "advertiser_id": PRIMARY,
        "custom_audience_ids": ["55"],
        "shared_advertiser_ids": [SECOND, THIRD],
    }
    assert others == {SECOND: "55", THIRD: "55"}
    uploader.reach_other_accounts("vip", "55")  # a retry's launch: already shared
    assert share.call_count == 1


def test_the_ledger_keeps_the_other_accounts_audiences_across_attempts(warehouse):
    ledger = Ledger(warehouse, "ledger", KEY)
    ledger.ensure_tables()
    record = SyncRecord.new(PRIMARY, None, "vip", "add", [SECOND, THIRD])
    assert record.other_audiences == {SECOND: None, THIRD: None}
    record.audience_id, record.other_audiences[SECOND], record.other_audiences[THIRD] = "55", "66", "77"
    record.status = Status.PENDING
    ledger.save(record)
    loaded = ledger.load()
    assert loaded is not None
    assert loaded.advertiser_ids == [PRIMARY, SECOND, THIRD]
    assert loaded.audience_ids == {PRIMARY: "55", SECOND: "66", THIRD: "77"}


def test_results_row_and_xcom_name_every_account_and_an_older_table_gains_the_columns(warehouse, tmp_path):
    with sqlite3.connect(tmp_path / "w.db") as db:  # a results table from before several accounts
        db.execute(
            "CREATE TABLE results (dag_id TEXT NOT NULL, task_id TEXT NOT NULL, run_id TEXT NOT NULL, "
            "map_index INTEGER NOT NULL, advertiser_id TEXT, PRIMARY KEY (dag_id, task_id, run_id, map_index))"
        )
    results = ResultsTable(warehouse, "results")
    results.ensure()
    record = SyncRecord.new(PRIMARY, "55", "vip", "add", [SECOND])
    record.other_audiences[SECOND] = "66"
    metrics = metrics_of(record, BatchTotals())
    results.write(KEY, record, metrics, Status.FINISHED)
    with sqlite3.connect(tmp_path / "w.db") as db:
        [(advertiser_id, advertiser_ids, audience_ids)] = db.execute(
            "SELECT advertiser_id, advertiser_ids, audience_ids FROM results"
        ).fetchall()
    assert (advertiser_id, advertiser_ids) == (PRIMARY, "7001,7002")
    assert json.loads(audience_ids) == {PRIMARY: "55", SECOND: "66"}
    xcom = xcom_value(metrics, record)
    assert (xcom["advertiser_id"], xcom["advertiser_ids"]) == (PRIMARY, [PRIMARY, SECOND])
    assert xcom["audience_ids"] == {PRIMARY: "55", SECOND: "66"}


class Events:
    def __init__(self) -> None:
        self.added: list[tuple[str, dict]] = []

    def __getitem__(self, alias):
        return self

    def add(self, asset, extra):
        self.added.append((asset.uri, extra))


def test_each_accounts_audience_is_an_asset_and_a_lineage_output():
    record = SyncRecord.new(PRIMARY, "55", "vip", "add", [SECOND])
    record.other_audiences[SECOND] = "66"
    events = Events()
    announce_refresh(events, xcom_value(metrics_of(record, BatchTotals()), record), "dag", "run", -1)
    by_uri = {uri: extra for uri, extra in events.added}
    assert set(by_uri) == {
        audience_asset_uri(PRIMARY, "vip"),
        audience_asset_uri(PRIMARY, "55"),
        audience_asset_uri(SECOND, "vip"),
        audience_asset_uri(SECOND, "66"),
    }
    assert by_uri[audience_asset_uri(SECOND, "66")]["advertiser_id"] == SECOND
    lineage = sync_lineage(None, None, PRIMARY, "55", "vip", record.other_audiences)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        (f"tiktok://{PRIMARY}", "audiences/55"),
        (f"tiktok://{SECOND}", "audiences/66"),
    ]
