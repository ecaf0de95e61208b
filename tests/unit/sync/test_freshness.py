"""Freshness: entry times ride along with the users into batches, and lags become percentiles."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from airflow_provider_tiktok.audience import PrepareOptions, UserBatch, UserPreparer
from airflow_provider_tiktok.sync.ledger import SyncRecord
from airflow_provider_tiktok.sync.staging import Preparation
from airflow_provider_tiktok.sync.timing import PhaseClock, add_lags, lag_percentile


def test_lag_percentiles_come_from_buckets_at_most_ten_percent_wide():
    histogram: dict[str, int] = {}
    add_lags(histogram, np.arange(1, 101, dtype=float))  # 1 s .. 100 s, one user each
    p50, p95 = lag_percentile(histogram, 0.5), lag_percentile(histogram, 0.95)
    assert 50 <= p50 <= 55 and 95 <= p95 <= 104.5
    assert lag_percentile({}, 0.5) is None


def test_each_batched_user_keeps_the_time_they_entered_and_reads_back_from_the_ledger():
    frame = pd.DataFrame(
        {
            "user_id": [1, 2, 2, 3, 4],
            "email": ["a@x.com", "b@x.com", "b@x.com", "bad", "d@x.com"],
            "entered_at": ["2026-11-26T10:00:00Z", "2026-11-26T10:00:01", "x", None, 1_764_151_203],
        }
    )
    preparation = Preparation(PrepareOptions({"email": "email"}, "user_id"), 2, entered_at_column="entered_at")
    record = SyncRecord.new("7001", None, "VIP", "add")
    preparer = UserPreparer(preparation.options)
    batches = list(preparation.batches(iter([frame]), preparer, PhaseClock(), record, None, lambda: None))
    entered = [t for b in batches for t in b.entered_at.to_pylist()]
    start = pd.Timestamp("2026-11-26T10:00:00Z").timestamp()
    assert entered[:2] == [start, start + 1]  # users 1 and 2 (the repeat of 2 and the invalid 3 left)
    assert entered[2] == 1_764_151_203  # a number is taken as epoch seconds
    restored = UserBatch.from_bytes(1, batches[0].to_bytes())
    assert restored.entered_at.to_pylist() == [start, start + 1]


def test_a_phase_still_open_counts_up_to_the_moment_phases_are_read():
    clock = PhaseClock()
    with clock.phase("report"):
        time.sleep(0.05)
        merged = clock.merged({"read": 1.0})
    assert merged["read"] == 1.0 and merged["report"] >= 0.05
