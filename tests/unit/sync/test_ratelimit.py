"""The limiter never lets more than N requests start in any window, whatever the threads do."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_tiktok.sync.ratelimit import SlidingWindowLimiter, share_of_budget


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
    import time

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
