"""Issue 14 row 6: 3 and 6 syncs on one token, each its own process with the real hook, share 50 requests/s.

The gates come from ``request_gate_for`` with a real Redis as the shared store; the emulator (250 ms
per answer, so that only the budget limits the rate) counts what arrives. Per-task limiters reached
74 requests/s and 77 x 40100 with three syncs.
"""

from __future__ import annotations

import pytest

from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS
from tests.integration.concurrency import run_concurrent_syncs
from tests.integration.redis_server import RedisServer

SECONDS_OF_WORK = 8.0


@pytest.mark.parametrize("syncs", [3, 6])
def test_concurrent_syncs_on_one_token_stay_within_and_use_the_budget(start_sandbox, syncs):
    sandbox = start_sandbox(latency_ms=250, valid_after_seconds=0)
    with RedisServer() as store:
        figures = run_concurrent_syncs(sandbox, syncs, store_url=store.url, seconds=SECONDS_OF_WORK)
    print(figures)
    assert figures.rate_limited == 0, figures
    assert figures.peak_per_second <= TIKTOK_MAX_QPS, figures
    assert figures.combined_per_second >= 0.9 * TIKTOK_MAX_QPS, figures
    assert figures.requests == syncs * int(SECONDS_OF_WORK * TIKTOK_MAX_QPS / syncs)  # no retries were needed
