"""Client-side request limiter shared by all upload threads of one task (no Airflow imports).

TikTok counts requests in any one-second window, so a classic token bucket (which allows a full
burst plus refill within one second) can exceed the limit. This limiter keeps the start times of
recent requests and admits a new one only if fewer than ``max_per_window`` started in the last
``window`` seconds. ``window`` defaults slightly above one second so that network jitter between
our clock and TikTok's cannot squeeze 51 starts into its second.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from airflow_provider_tiktok.limits import MAX_REQUESTS_PER_SECOND

TIKTOK_MAX_QPS = MAX_REQUESTS_PER_SECOND


class SlidingWindowLimiter:
    def __init__(
        self,
        max_qps: float,
        *,
        window: float = 1.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < max_qps <= TIKTOK_MAX_QPS:
            raise ValueError(f"max_qps must be in (0, {TIKTOK_MAX_QPS}], got {max_qps}")
        self.max_per_window = max(1, int(max_qps))
        self.window = window if max_qps >= 1 else window / max_qps
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        """Block until one more request may start, then record it."""
        while True:
            with self._lock:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.window:
                    self._starts.popleft()
                if len(self._starts) < self.max_per_window:
                    self._starts.append(now)
                    return
                wait = self._starts[0] + self.window - now
            self._sleep(max(wait, 0.001))


def share_of_budget(concurrent_tasks: int, budget: float = TIKTOK_MAX_QPS) -> float:
    """Per-task ``max_qps`` when ``concurrent_tasks`` may run at once on one token (e.g. a pool's slots)."""
    if concurrent_tasks < 1:
        raise ValueError("concurrent_tasks must be at least 1")
    return budget / concurrent_tasks
