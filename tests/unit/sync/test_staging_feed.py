"""Staging goes on while the audience is settled; nothing is handed to the upload before it is. A mirror
plan's snapshot is read beside the source once the audience is found."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest

from airflow_provider_tiktok.audience import PrepareOptions, UserPreparer
from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.sync.ledger import Ledger, Status, SyncKey, SyncRecord
from airflow_provider_tiktok.sync.mirror import MirrorSettings
from airflow_provider_tiktok.sync.staging import Preparation
from airflow_provider_tiktok.sync.timing import PhaseClock
from airflow_provider_tiktok.warehouse import Warehouse

CHUNKS = [pd.DataFrame({"user_id": range(n, n + 4), "email": [f"u{i}@x.com" for i in range(n, n + 4)]}) for n in (0, 4)]


@pytest.fixture
def ledger(tmp_path, monkeypatch) -> Ledger:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    ledger = Ledger(Warehouse("warehouse"), "ledger", SyncKey("dag", "sync", "run", -1))
    ledger.ensure_tables()
    return ledger


def stage(ledger: Ledger, settle) -> tuple[SyncRecord, object]:
    record = SyncRecord.new("7001", None, "VIP", "add")
    preparation = Preparation(PrepareOptions({"email": "email"}, "user_id"), batch_size=2)
    return record, preparation.stage(iter(CHUNKS), ledger, record, PhaseClock(), settle, lambda: None)


def test_every_batch_is_staged_while_the_audience_is_settled_and_only_then_handed_on(ledger):
    release, asked = threading.Event(), []

    def settle(first) -> None:
        asked.append(first.number)
        release.wait(5)
        record.audience_id = "7100000000001"

    record, feed = stage(ledger, settle)
    handed: list[int] = []
    consumer = threading.Thread(target=lambda: handed.extend(batch.number for batch in feed))
    consumer.start()
    feed._thread.join(5)  # staging ended though the audience is not settled yet
    assert asked == [1] and ledger.totals().count(Status.PENDING) == 8 and handed == []
    assert ledger.load().status is Status.STAGING  # not resumable before the audience is named
    release.set()
    consumer.join(5)
    assert handed == [1, 2, 3, 4]
    loaded = ledger.load()
    assert loaded.status is Status.PENDING and loaded.audience_id == "7100000000001"


def test_a_refused_audience_stops_the_upload_and_leaves_the_sync_to_start_afresh(ledger):
    def settle(first) -> None:
        raise TikTokConfigurationError("Audience 'VIP' does not exist for advertiser 7001")

    _, feed = stage(ledger, settle)
    with pytest.raises(TikTokConfigurationError, match="does not exist"):
        list(feed)
    with pytest.raises(TikTokConfigurationError):
        feed.finish()
    assert ledger.load().status is Status.STAGING


def test_a_sync_without_users_still_waits_for_the_launch_checks(ledger):
    settled: list[object] = []
    record = SyncRecord.new("7001", None, "VIP", "add")
    preparation = Preparation(PrepareOptions({"email": "email"}, "user_id"), batch_size=2)
    feed = preparation.stage(iter(()), ledger, record, PhaseClock(), settled.append, lambda: None)
    assert list(feed) == [] and settled == [None]
    assert ledger.load().status is Status.PENDING


def mirror_preparation(ledger: Ledger) -> Preparation:
    mirror = MirrorSettings("snapshot", min_audience_size=1)
    mirror.snapshot(ledger.warehouse, "", None).ensure()
    return Preparation(PrepareOptions({"email": "email"}, "user_id"), batch_size=3, mirror=mirror)


def test_a_mirror_plan_reads_the_snapshot_of_the_audience_the_launch_checks_find(ledger):
    """The snapshot is loaded beside the read, but only once the checks have named the audience: loaded
    earlier, it would be no audience's and the plan would add every user again."""
    warehouse, preparation = ledger.warehouse, mirror_preparation(ledger)
    known = SyncRecord.new("7001", "7100000000001", None, "mirror")
    first = preparation.batches(
        iter(CHUNKS), UserPreparer(preparation.options), PhaseClock(), known, warehouse, lambda: None
    )
    snapshot = preparation.mirror.snapshot(warehouse, "7001", "7100000000001")
    for batch in first:
        snapshot.apply(batch, ["email"])

    record = SyncRecord.new("7001", None, "VIP", "mirror")
    found = threading.Event()

    def audience_found() -> None:
        found.wait(5)
        record.audience_id = "7100000000001"

    churned = [CHUNKS[0], CHUNKS[1].iloc[:3]]  # user 7 left
    threading.Timer(0.2, found.set).start()
    second = list(
        preparation.batches(
            iter(churned), UserPreparer(preparation.options), PhaseClock(), record, warehouse, audience_found
        )
    )
    assert record.unchanged == 7
    assert [(b.action, b.user_keys.to_pylist()) for b in second] == [("remove", ["7"])]


def test_a_snapshot_that_cannot_be_loaded_stops_the_read_at_its_next_chunk(ledger):
    preparation, read = mirror_preparation(ledger), []

    def chunks():
        for n in range(100):
            read.append(n)
            time.sleep(0.01)
            yield pd.DataFrame({"user_id": [n], "email": [f"u{n}@x.com"]})

    def refused() -> None:
        raise TikTokConfigurationError("Audience 7100000000001 was not found for 7001")

    record = SyncRecord.new("7001", None, "VIP", "mirror")
    with pytest.raises(TikTokConfigurationError, match="not found"):
        preparation.batches(
            chunks(), UserPreparer(preparation.options), PhaseClock(), record, ledger.warehouse, refused
        )
    assert len(read) < 100


def test_waiting_for_the_snapshot_counts_as_planning(ledger):
    preparation, clock = mirror_preparation(ledger), PhaseClock()
    record = SyncRecord.new("7001", None, "VIP", "mirror")
    list(
        preparation.batches(
            iter(CHUNKS), UserPreparer(preparation.options), clock, record, ledger.warehouse, lambda: time.sleep(0.5)
        )
    )
    assert clock.seconds["plan"] >= 0.4 and record.unchanged == 0
