"""The retry helper spans the requested window under Airflow's backoff formula."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_tiktok.sync.retry_window import expected_retry_delays, retry_arguments


@pytest.mark.parametrize("hours", [13, 1, 24])
def test_schedule_sums_to_within_ten_percent_of_the_window(hours):
    window = timedelta(hours=hours)
    args = retry_arguments(window)
    delays = expected_retry_delays(
        args["retries"], args["retry_delay"], args["retry_exponential_backoff"], args["max_retry_delay"]
    )
    total = sum(delays, timedelta(0))
    assert abs(total - window) <= window * 0.10, (total, window)
    assert args["retry_exponential_backoff"] > 1.0  # Airflow 3 reads True as 1.0: no backoff at all


def test_thirteen_hours_uses_the_default_schedule():
    args = retry_arguments()
    assert args["retries"] == 17
    assert args["retry_delay"] == timedelta(minutes=2)
    assert timedelta(minutes=50) <= args["max_retry_delay"] <= timedelta(hours=1)


def test_non_positive_window_is_refused():
    with pytest.raises(ValueError):
        retry_arguments(timedelta(0))
