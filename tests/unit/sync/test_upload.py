"""Each batch's fate under each error class, and what a fatal error does to the rest."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import requests

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import (
    TikTokBadRequestError,
    TikTokRateLimitError,
    TikTokTokenError,
)
from airflow_provider_tiktok.sync.ledger import Status
from airflow_provider_tiktok.sync.upload import Progress, upload_batches


def batches(count: int, users: int = 3) -> list[UserBatch]:
    return [UserBatch(n, ("EMAIL_SHA256",), (pa.array(["a" * 64] * users),)) for n in range(1, count + 1)]


def run(send, count=10, **kwargs):
    seen = []
    result = upload_batches(
        batches(count), send, concurrency=3, on_outcome=lambda outcome, _batch: seen.append(outcome), **kwargs
    )
    return result, {o.number: o for o in seen}


def test_every_batch_is_acknowledged_once():
    sent = []
    result, outcomes = run(lambda b: sent.append(b.number))
    assert sorted(sent) == list(range(1, 11))
    assert {o.status for o in outcomes.values()} == {Status.ACKNOWLEDGED}
    assert result.fatal is None and len(result.outcomes) == 10


def test_retryable_failure_leaves_the_batch_staged_with_its_code():
    def send(batch):
        if batch.number == 4:
            raise TikTokRateLimitError(40100, "slow down")

    result, outcomes = run(send)
    assert outcomes[4].status is Status.PENDING and outcomes[4].error_code == 40100
    assert "40100" in result.last_retryable
    assert sum(o.status is Status.ACKNOWLEDGED for o in outcomes.values()) == 9


def test_refused_payload_is_errored_and_the_rest_continue():
    def send(batch):
        if batch.number == 2:
            raise TikTokBadRequestError(40062, "PII not hashed")

    _, outcomes = run(send)
    assert outcomes[2].status is Status.ERRORED and outcomes[2].error_code == 40062
    assert sum(o.status is Status.ACKNOWLEDGED for o in outcomes.values()) == 9


def test_fatal_error_stops_submitting_new_batches():
    sent = []

    def send(batch):
        sent.append(batch.number)
        time.sleep(0.01)
        if batch.number >= 3:
            raise TikTokTokenError(40105, "revoked")

    result, outcomes = run(send, count=100)
    assert result.fatal.code == 40105
    assert len(sent) < 15  # no storm: at most the batches already in flight
    assert all(o.status is not Status.ERRORED for o in outcomes.values())


def test_deadline_stops_before_starting_more_work():
    result, outcomes = run(lambda b: None, count=50, start_deadline=time.monotonic() - 1)
    assert result.stopped_early and outcomes == {}


def test_progress_reports_percent_rate_and_eta():
    lines = []
    progress = Progress(total_users=30, log=lines.append, interval=0)
    run(lambda b: None, progress=progress)
    assert "30/30 users (100.0%)" in lines[-1] and "users/s" in lines[-1] and "ETA" in lines[-1]


def test_an_unforeseen_failure_of_one_request_keeps_every_other_outcome():
    def send(batch):
        if batch.number == 3:
            raise requests.exceptions.ChunkedEncodingError("connection cut mid-body")

    result, outcomes = run(send)
    assert len(outcomes) == 10 and outcomes[3].status is Status.PENDING
    assert sum(o.status is Status.ACKNOWLEDGED for o in outcomes.values()) == 9
    assert "ChunkedEncodingError" in result.last_retryable


def test_batches_waiting_for_a_thread_are_not_sent_after_a_fatal_answer():
    sent = []

    def send(batch):
        sent.append(batch.number)
        if batch.number == 1:
            raise TikTokTokenError(40105, "revoked")
        time.sleep(0.05)

    result = upload_batches(batches(20), send, concurrency=1, on_outcome=lambda outcome, _batch: None)
    assert result.fatal is not None and sent == [1]


def test_each_batch_leaves_as_soon_as_staging_hands_it_over():
    """The first request does not wait for the source to produce a window's worth of batches."""
    sent, released = threading.Event(), threading.Event()

    def slow_source():
        yield from batches(1)
        assert sent.wait(5), "batch 1 was held back until more batches came"
        released.set()
        yield from batches(2)[1:]

    outcomes = []
    upload_batches(
        slow_source(), lambda b: sent.set(), concurrency=16, on_outcome=lambda outcome, _b: outcomes.append(outcome)
    )
    assert released.is_set() and sorted(o.number for o in outcomes) == [1, 2]
