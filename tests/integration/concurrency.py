"""Several syncs on one token, each in its own process, upload against the emulator through the real hook.

Each process builds its gate with ``request_gate_for`` (shared budget when ``store_url`` is set) and sends
small ``segment/mapping/`` batches from many threads, so only latency and the budget limit the rate. The
emulator measures what arrived: the peak requests in any one-second window and the combined rate.
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.sandbox.process import SandboxProcess
from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS, RequestGate, request_gate_for

DIGESTS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(100)]


@dataclass(frozen=True)
class ConcurrencyFigures:
    """Peaks are the most requests in any one second: as the emulator saw them arrive, and as the gates let
    them go (``sent_peak_per_second``); ``combined_per_second`` counts starts from the first to the last."""

    syncs: int
    requests: int
    rate_limited: int
    combined_per_second: float
    peak_per_second: int
    sent_peak_per_second: int

    def __str__(self) -> str:
        return (
            f"{self.syncs} concurrent syncs: peak {self.peak_per_second} requests/s at the emulator "
            f"({self.sent_peak_per_second} as sent), combined "
            f"{self.combined_per_second:.1f} requests/s ({self.combined_per_second / TIKTOK_MAX_QPS:.0%} of "
            f"{TIKTOK_MAX_QPS}), {self.requests} requests, {self.rate_limited} x 40100"
        )


def _one_sync(
    base_url: str,
    token: str,
    advertiser_id: str,
    audience_id: str,
    store_url: str | None,
    batches: int,
    threads: int,
    ready: multiprocessing.Barrier,
    done: multiprocessing.Queue,
) -> None:
    gate = TimedGate(request_gate_for(token, store_url=store_url))
    hook = TikTokHook.for_base_url(base_url, token, request_gate=gate, pool_maxsize=threads)
    column = (pa.array(DIGESTS),)

    def send(number: int) -> None:
        hook.map_batch("add", advertiser_id, [audience_id], UserBatch(number, ("EMAIL_SHA256",), column))

    ready.wait()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range(batches)))
    done.put(gate.starts)


class TimedGate:
    """Passes ``acquire`` on and notes when each request was let go."""

    def __init__(self, gate: RequestGate) -> None:
        self.gate = gate
        self.starts: list[float] = []

    def acquire(self) -> None:
        self.gate.acquire()
        self.starts.append(time.time())


def run_concurrent_syncs(
    sandbox: SandboxProcess, syncs: int, *, store_url: str | None, seconds: float = 8.0, threads: int = 8
) -> ConcurrencyFigures:
    """``syncs`` processes with enough work together for about ``seconds`` at the full budget."""
    audiences = [sandbox_audience(sandbox, f"concurrent {n}") for n in range(syncs)]
    batches = max(1, int(seconds * TIKTOK_MAX_QPS / syncs))
    context = multiprocessing.get_context("fork")
    ready, done = context.Barrier(syncs + 1), context.Queue()
    workers = [
        context.Process(
            target=_one_sync,
            args=(
                sandbox.base_url,
                sandbox.access_token,
                sandbox.advertiser_id,
                audience,
                store_url,
                batches,
                threads,
                ready,
                done,
            ),
        )
        for audience in audiences
    ]
    sandbox.reset_stats()
    for worker in workers:
        worker.start()
    ready.wait(timeout=120)
    starts = [start for _ in workers for start in done.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0, f"a sync process failed with exit code {worker.exitcode}"
    stats = sandbox.stats()
    codes = stats["requests"].get("segment/mapping/", {})
    return ConcurrencyFigures(
        syncs=syncs,
        requests=sum(codes.values()),
        rate_limited=codes.get("40100", 0),
        combined_per_second=(len(starts) - 1) / (max(starts) - min(starts)),
        sent_peak_per_second=most_in_one_second(starts),
        peak_per_second=stats["peak_requests_per_second"],
    )


def most_in_one_second(starts: list[float]) -> int:
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, start + 1.0) - index for index, start in enumerate(starts))


def sandbox_audience(sandbox: SandboxProcess, name: str) -> str:
    return TikTokHook.for_base_url(sandbox.base_url, sandbox.access_token).create_audience(sandbox.advertiser_id, name)
