"""Request gates: the token's rate budget shared by every sync on it, and a per-task fallback (no Airflow imports).

TikTok counts requests in any one-second window, so a classic token bucket (which allows a full
burst plus refill within one second) can exceed the limit. The per-task gate is a moving window;
the shared gate spaces starts evenly. Both budget 50 starts per 1.05 s, slightly above one second so
that jitter between our send and TikTok's clock cannot squeeze 51 starts into its second.
:func:`request_gate_for` picks the gate for a sync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import redis

from airflow_provider_tiktok.limits import MAX_REQUESTS_PER_SECOND
from airflow_provider_tiktok.sync.coordination import KEY_PREFIX, redis_options, token_fingerprint

log = logging.getLogger(__name__)

TIKTOK_MAX_QPS = MAX_REQUESTS_PER_SECOND
WINDOW_SECONDS = 1.05

# Reserve the next start for one request: no sooner than now, and one interval (ARGV[1], microseconds)
# after the start reserved before it, both on the store's own clock (TIME) so that every worker's start
# is placed in one order on one clock. Returns the microseconds to wait until the reserved start.
_RESERVE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or 0))
local ttl_ms = math.ceil((start - now + interval) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', start + interval), 'PX', ttl_ms)
return start - now
"""


class RequestGate(Protocol):
    """Anything that blocks until one more request may start (what ``TikTokHook(request_gate=...)`` calls)."""

    def acquire(self) -> None: ...


class SlidingWindowLimiter:
    """One task's moving window, shared by its upload threads."""

    def __init__(
        self,
        max_qps: float,
        *,
        window: float = WINDOW_SECONDS,
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


class SharedRateBudget:
    """
    The token's budget, shared by every sync on it through the store (Redis): one start every
    ``window / per_second`` seconds (21 ms), whoever asks.

    Each request reserves the next free start in one atomic script and sleeps until it, so no two
    workers race and nobody polls. Evenly spaced starts put at most ``per_second`` in any ``window``
    and never a clump that could reach TikTok as 51 in its second. ``task_gate`` runs first, for the
    task's own ``max_qps``, and takes over alone if the store fails: one warning, and the sync goes on
    at its per-task rate.
    """

    def __init__(
        self,
        store_url: str,
        token: str,
        task_gate: RequestGate,
        *,
        per_second: int = TIKTOK_MAX_QPS,
        window: float = WINDOW_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._reserve = redis.Redis.from_url(store_url, **redis_options()).register_script(_RESERVE_SCRIPT)
        self._key = f"{KEY_PREFIX}/rate-budget/{token_fingerprint(token)}"
        self._interval_us = round(window / per_second * 1_000_000)
        self._task_gate = task_gate
        self._sleep = sleep
        self._store_failed = threading.Event()

    @property
    def shared(self) -> bool:
        """False once the store failed and the task's own gate alone decides."""
        return not self._store_failed.is_set()

    def acquire(self) -> None:
        self._task_gate.acquire()
        if self._store_failed.is_set():
            return
        try:
            wait_us = self._reserve(keys=[self._key], args=[self._interval_us])
        except redis.RedisError as err:
            if not self._store_failed.is_set():
                self._store_failed.set()
                log.warning(
                    "Shared rate budget unavailable (%s); this task goes on with its own per-task budget.",
                    type(err).__name__,
                )
            return
        if wait_us > 0:
            self._sleep(wait_us / 1_000_000)


def request_gate_for(token: str, max_qps: float = TIKTOK_MAX_QPS, *, store_url: str | None) -> RequestGate:
    """
    The gate one sync puts in front of every request on ``token``.

    With a store (see ``coordination.resolve_store_url``) every sync on the token shares its 50 requests/s
    and ``max_qps`` caps this sync's part; without one, each task has ``max_qps`` to itself.
    """
    task_gate = SlidingWindowLimiter(max_qps)
    if store_url is None:
        return task_gate
    return SharedRateBudget(store_url, token, task_gate)
