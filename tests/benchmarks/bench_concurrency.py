"""Several syncs on one token at once: does the shared rate budget hold TikTok's 50 requests/s, and use it?

    .venv/bin/python tests/benchmarks/bench_concurrency.py [--seconds 12] [--latency-ms 250] [--syncs 3 6]
                                                           [--no-celery]

Each sync is its own process with the real hook and its gate from ``request_gate_for``; the shared store
is a real local Redis. The emulator answers each request after ``latency-ms`` and reports the peak
requests in any one second. For comparison the first row runs the same syncs with per-task limiters
(no store), as before the shared budget. The Celery rows (about two minutes more) run the same numbers
of ``SyncAudienceOperator`` tasks under a real scheduler and two Celery workers, with no store configured:
the tasks find the Redis broker themselves (see ``tests/integration/test_celery_scale_out.py``). Figures
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from airflow_provider_tiktok.sandbox.process import SandboxProcess  # noqa: E402
from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS  # noqa: E402
from tests.integration.concurrency import run_concurrent_syncs  # noqa: E402
from tests.integration.conftest import postgres_server  # noqa: E402
from tests.integration.redis_server import RedisServer  # noqa: E402
from tests.integration.test_celery_scale_out import (  # noqa: E402
    run_concurrent_syncs_on_celery,
    seed_concurrent_entrants,
)

LABEL_WIDTH = 30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0, help="work of all syncs together, at 50/s")
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--syncs", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--celery", action=argparse.BooleanOptionalAction, default=True, help="add the Celery rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with RedisServer() as store:
            runs = [("per-task limiters (no store)", args.syncs[0], None)]
            runs += [("shared budget (Redis)", syncs, store.url) for syncs in args.syncs]
            for label, syncs, store_url in runs:
                state = Path(tmp) / f"{syncs}-{'shared' if store_url else 'per-task'}.db"
                with SandboxProcess(state, latency_ms=args.latency_ms, valid_after_seconds=0) as sandbox:
                    figures = run_concurrent_syncs(sandbox, syncs, store_url=store_url, seconds=args.seconds)
                print(f"{label:<{LABEL_WIDTH}} {figures}", flush=True)
        if args.celery:
            with contextmanager(postgres_server.__wrapped__)() as pg:
                scenarios = tuple(args.syncs)
                seed_concurrent_entrants(pg, scenarios, int(args.seconds * TIKTOK_MAX_QPS))
                with SandboxProcess(
                    Path(tmp) / "celery.db", latency_ms=args.latency_ms, valid_after_seconds=0
                ) as sandbox:
                    done = run_concurrent_syncs_on_celery(pg, Path(tmp), sandbox, scenarios)
            for figures in done.figures:
                print(f"{'Celery, broker found':<{LABEL_WIDTH}} {figures}", flush=True)


if __name__ == "__main__":
    main()
