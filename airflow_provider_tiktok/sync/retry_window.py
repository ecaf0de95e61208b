"""Airflow retry arguments that keep retrying a sync for about a given window (default 13 hours).

Airflow's exponential backoff waits between ``base * m**(n-1)`` and twice that before retry ``n``
(a per-task hash picks the point), capped by ``max_retry_delay``. We plan with the midpoint.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

DEFAULT_RETRY_WINDOW = timedelta(hours=13)


def expected_retry_delays(
    retries: int, retry_delay: timedelta, multiplier: float, max_retry_delay: timedelta
) -> list[timedelta]:
    base = retry_delay.total_seconds()
    return [
        timedelta(seconds=min(1.5 * base * multiplier ** (n - 1), max_retry_delay.total_seconds()))
        for n in range(1, retries + 1)
    ]


def retry_arguments(
    window: timedelta = DEFAULT_RETRY_WINDOW,
    *,
    retry_delay: timedelta = timedelta(minutes=2),
    multiplier: float = 2.0,
    max_retry_delay: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    """``retries``/``retry_delay``/``retry_exponential_backoff``/``max_retry_delay`` spanning ``window``.

    The first retry comes soon (``retry_delay``, for short blips); the fewest retries whose longest
    schedule reaches the window are chosen, then the cap is tuned so the schedule ends on the window.
    Pass them to the sync task (or ``default_args``) together with the same ``retry_window``.
    """
    if window <= timedelta(0):
        raise ValueError("window must be positive")

    def total(retries: int, cap: timedelta) -> timedelta:
        return sum(expected_retry_delays(retries, retry_delay, multiplier, cap), timedelta(0))

    retries = 1
    while total(retries, max_retry_delay) < window:
        retries += 1
    low, high = retry_delay, max_retry_delay
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if total(retries, middle) < window else (low, middle)
    return {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": multiplier,
        "max_retry_delay": timedelta(seconds=round(high.total_seconds())),
    }
