"""The limiter never lets more than N requests start in any window, whatever the threads do."""

from __future__ import annotations

import bisect
import logging
import multiprocessing
import threading
import time

import pytest
import redis

from airflow_provider_tiktok.sandbox.process import free_port
from airflow_provider_tiktok.sync.coordination import token_fingerprint
from airflow_provider_tiktok.sync.ratelimit import (
    TIKTOK_MAX_QPS,
    SlidingWindowLimiter,
    request_gate_for,
    share_of_budget,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_no_window_ever_holds_more_than_the_limit():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(50, window=1.0, clock=clock.time, sleep=clock.sleep)
    starts = []
    for _ in range(500):
        limiter.acquire()
        starts.append(clock.now)
    for index, start in enumerate(starts):
        in_window = [s for s in starts[index:] if s < start + 1.0]
        assert len(in_window) <= 50
    assert starts[-1] == pytest.approx(9.0, abs=0.05)  # 500 requests at 50 per second


def test_fractional_rates_space_requests_out():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(0.5, window=1.0, clock=clock.time, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()
    assert clock.now == pytest.approx(2.0, abs=0.01)


def test_threads_together_respect_the_limit():
    limiter = SlidingWindowLimiter(20, window=0.2)
    starts: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(10):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert len(starts) == 80
    assert all(len([s for s in starts[i:] if s < start + 0.2]) <= 20 for i, start in enumerate(starts))


def test_budget_is_split_between_concurrent_tasks():
    assert share_of_budget(2) == 25
    assert share_of_budget(4, budget=40) == 10
    with pytest.raises(ValueError):
        share_of_budget(0)
    with pytest.raises(ValueError, match="max_qps"):
        SlidingWindowLimiter(51)


# --- the budget shared by every sync on a token (real Redis) -----------------------------------------

TOKEN = "act.example-token-0123456789"


def _acquire_in_threads(store_url: str, starts_per_thread: int, threads: int, ready, starts) -> None:
    """One sync: its own gate, several upload threads; reports when each request may start."""
    gate = request_gate_for(TOKEN, store_url=store_url)
    mine: list[float] = []
    lock = threading.Lock()

    def upload_thread() -> None:
        for _ in range(starts_per_thread):
            gate.acquire()
            with lock:
                mine.append(time.time())

    workers = [threading.Thread(target=upload_thread) for _ in range(threads)]
    ready.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    starts.put((gate.shared, mine))


def most_in_any_window(starts: list[float], window: float) -> int:
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, start + window) - index for index, start in enumerate(starts))


def test_processes_on_one_token_share_fifty_per_second_and_use_it(redis_server):
    context = multiprocessing.get_context("fork")
    syncs, threads, per_thread = 3, 4, 14  # 168 starts: about 3.5 s at the full budget
    ready, starts = context.Barrier(syncs), context.Queue()
    processes = [
        context.Process(target=_acquire_in_threads, args=(redis_server.url, per_thread, threads, ready, starts))
        for _ in range(syncs)
    ]
    for process in processes:
        process.start()
    reports = [starts.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    assert [shared for shared, _ in reports] == [True] * syncs
    combined = [start for _, mine in reports for start in mine]
    assert len(combined) == syncs * threads * per_thread
    peak, rate = most_in_any_window(combined, 1.0), (len(combined) - 1) / (max(combined) - min(combined))
    assert peak <= TIKTOK_MAX_QPS, f"{peak} starts in one second"
    assert 0.9 * TIKTOK_MAX_QPS <= rate <= TIKTOK_MAX_QPS, f"{rate:.1f} starts/s together"


def test_the_store_sees_a_fingerprint_of_the_token_never_the_token(redis_server):
    request_gate_for(TOKEN, store_url=redis_server.url).acquire()
    with redis.Redis.from_url(redis_server.url) as client:
        keys = [key.decode() for key in client.keys("*")]
    assert keys == [f"tiktok/rate-budget/{token_fingerprint(TOKEN)}"]
    assert TOKEN not in keys[0]


def test_without_a_store_each_task_has_its_own_limiter():
    assert isinstance(request_gate_for(TOKEN, 20, store_url=None), SlidingWindowLimiter)


def test_an_unreachable_store_falls_back_to_the_task_budget_and_warns_once(caplog):
    gate = request_gate_for(TOKEN, 50, store_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tiktok.sync.ratelimit"):
        for _ in range(55):
            gate.acquire()
    assert gate.shared is False
    assert time.monotonic() - started >= 1.0  # the per-task window still holds: 55 starts need over a second
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Shared rate budget unavailable (ConnectionError); this task goes on with its own per-task budget."
    ]


def test_a_store_that_dies_mid_run_never_fails_the_sync(redis_server, caplog):
    gate = request_gate_for(TOKEN, store_url=redis_server.url)
    gate.acquire()
    assert gate.shared is True
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tiktok.sync.ratelimit"):
        for _ in range(5):
            gate.acquire()
    assert gate.shared is False
    assert len([r for r in caplog.records if "Shared rate budget unavailable" in r.getMessage()]) == 1
