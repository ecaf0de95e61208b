"""The upload engine under random answers and a slow source: every batch it takes from the source ends with exactly
one outcome, sent at most once, and it never holds more than two batches per thread ahead of their outcomes."""

from __future__ import annotations

import random
import threading
import time

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import TikTokBadRequestError, TikTokRateLimitError, TikTokTokenError
from airflow_provider_tiktok.sync.ledger import Status
from airflow_provider_tiktok.sync.upload import upload_batches

ANSWERS = ["ok", "ok", "ok", "retryable", "refused", "fatal", "crash"]


@settings(max_examples=40, deadline=None)
@given(
    answers=st.lists(st.sampled_from(ANSWERS), min_size=0, max_size=30),
    concurrency=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_each_batch_taken_gets_one_outcome_and_few_wait_in_memory(answers, concurrency, seed):
    jitter = random.Random(seed)
    lock = threading.Lock()
    sent: list[int] = []
    outcomes: dict[int, Status] = {}
    taken: list[int] = []

    def source():
        for number in range(1, len(answers) + 1):
            assert len(taken) - len(outcomes) < 2 * concurrency  # room for this one
            time.sleep(jitter.random() / 2000)
            taken.append(number)
            yield UserBatch(number, ("EMAIL_SHA256",), (pa.array(["a" * 64]),))

    def send(batch: UserBatch) -> None:
        with lock:
            sent.append(batch.number)
        time.sleep(jitter.random() / 1000)
        answer = answers[batch.number - 1]
        if answer == "retryable":
            raise TikTokRateLimitError(51021, "slow down")
        if answer == "refused":
            raise TikTokBadRequestError(40002, "bad")
        if answer == "fatal":
            raise TikTokTokenError(40105, "token revoked")
        if answer == "crash":
            raise RuntimeError("unforeseen")

    def on_outcome(outcome, batch):
        assert outcome.number == batch.number and outcome.number not in outcomes
        outcomes[outcome.number] = outcome.status

    result = upload_batches(source(), send, concurrency=concurrency, on_outcome=on_outcome)
    assert sorted(outcomes) == taken == list(range(1, len(taken) + 1))
    assert len(set(sent)) == len(sent) and set(sent) <= set(taken)
    for number in taken:
        answer, status = answers[number - 1], outcomes[number]
        if number not in sent:
            assert status is Status.PENDING and result.fatal is not None  # held back after a fatal answer
        elif answer == "ok":
            assert status is Status.ACKNOWLEDGED
        else:
            assert status is (Status.ERRORED if answer == "refused" else Status.PENDING)
    if "fatal" not in answers:
        assert result.fatal is None and len(taken) == len(answers)
