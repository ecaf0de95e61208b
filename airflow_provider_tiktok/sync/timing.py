"""Where a sync's time goes: read, prepare, stage, upload, report, and the time to its first request.

Each second of a thread is given to the innermost phase running on it (pulling a batch that needs a fresh
chunk counts as read, not prepare). Staging runs on its own thread beside the upload, so the phases of
an attempt can add up to more than its wall time.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class PhaseClock:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.cpu_started = time.process_time()
        self.last_ack_at: float | None = None
        self.seconds: dict[str, float] = defaultdict(float)
        self.first_chunk_at: float | None = None
        self.first_request_at: float | None = None
        self._lock = threading.Lock()
        self._thread = threading.local()

    def _switch(self) -> None:
        """Give the time since the thread's last switch to the phase it was in."""
        now = time.monotonic()
        stack: list[str] = self._thread.__dict__.setdefault("stack", [])
        if stack:
            with self._lock:
                self.seconds[stack[-1]] += now - self._thread.mark
        self._thread.mark = now

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch()
        self._thread.__dict__.setdefault("stack", []).append(name)
        try:
            yield
        finally:
            self._switch()
            self._thread.stack.pop()

    def timed(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """``items``, with the time spent producing each counted to ``name``."""
        source = iter(items)
        while True:
            with self.phase(name):
                try:
                    item = next(source)
                except StopIteration:
                    return
            yield item

    def chunk_read(self) -> None:
        self.first_chunk_at = self.first_chunk_at or time.monotonic()

    def stamp_first_request(self, send: Callable[[T], None]) -> Callable[[T], None]:
        def stamped(item: T) -> None:
            if self.first_request_at is None:
                self.first_request_at = time.monotonic()
            send(item)

        return stamped

    @property
    def first_request_seconds(self) -> float | None:
        if self.first_request_at is None or self.first_chunk_at is None:
            return None
        return round(max(self.first_request_at - self.first_chunk_at, 0.0), 3)

    def stamp_ack(self) -> None:
        self.last_ack_at = time.monotonic()

    @property
    def active_seconds(self) -> float:
        """From the first source chunk read (or the attempt's start, on a retry) to the last acknowledgement."""
        if self.last_ack_at is None:
            return 0.0
        return max(self.last_ack_at - (self.first_chunk_at or self.started), 0.0)

    def cpu_seconds(self) -> float:
        """CPU time of the whole task process (every thread) since the attempt started."""
        return time.process_time() - self.cpu_started

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def merged(self, earlier: Mapping[str, float]) -> dict[str, float]:
        """Seconds per phase over every attempt so far, the calling thread's open phase counted up to now (the
        report is still running when its row is made)."""
        self._switch()
        phases = set(earlier) | set(self.seconds)
        return {p: round(earlier.get(p, 0.0) + self.seconds.get(p, 0.0), 3) for p in sorted(phases)}


_frozen_syncs = 0
_frozen_lock = threading.Lock()


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep the garbage collector off the task's long-lived objects (Airflow and its imports, a quarter of
    a million) while a sync runs. A sync makes millions of short-lived row tuples; each full collection
    they set off would rescan the whole heap: measured, a million-row snapshot read took 1.8 s, 0.6 s
    frozen. Objects made during the sync are collected as usual. Syncs running side by side in one
    process share the freeze: the last to finish lifts it."""
    global _frozen_syncs
    with _frozen_lock:
        _frozen_syncs += 1
        if _frozen_syncs == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_syncs -= 1
            if _frozen_syncs == 0:
                gc.unfreeze()


#: Freshness is kept as a histogram of lags in buckets 10 % wide (bucket ``i`` holds lags below 1.1**i
#: seconds), so percentiles over millions of users cost a few hundred integers in the ledger.
LAG_BUCKET_GROWTH = 1.1


def add_lags(histogram: dict[str, int], lags: np.ndarray) -> None:
    """Count each lag (seconds) into ``histogram`` (bucket index as text, JSON-safe)."""
    buckets = np.ceil(np.log(np.maximum(lags, 1.0)) / np.log(LAG_BUCKET_GROWTH)).astype(np.int64)
    for bucket, count in zip(*np.unique(buckets, return_counts=True), strict=True):
        histogram[str(bucket)] = histogram.get(str(bucket), 0) + int(count)


def lag_percentile(histogram: dict[str, int], share: float) -> float | None:
    """The lag (seconds, the bucket's upper edge: at most 10 % high) under which ``share`` of users fall."""
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(histogram, key=int):
        seen += histogram[bucket]
        if seen >= share * total:
            return round(LAG_BUCKET_GROWTH ** int(bucket), 1)
    return None
