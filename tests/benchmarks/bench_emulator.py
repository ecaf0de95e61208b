"""Can the emulator take TikTok's full rate of full batches? (it must not bottleneck our benchmarks)

    .venv/bin/python tests/benchmarks/bench_emulator.py [--seconds 10] [--rate 49]

This process produces 10,000-user mapping payloads (~1 MB of JSON each, fresh random digests) and
sends them evenly paced at ``--rate`` requests/s from 8 threads to an emulator in its own process.
A late send never catches up in a burst (that would rightly earn 40100). Prints sustained
requests/s, users/s, answers that were not code 0, answer latency, and the emulator's CPU use:
its share of one core at this rate says how far it is from being the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import psutil
import requests

from airflow_provider_tiktok.sandbox.process import SandboxProcess

USERS = 10_000


def payload(advertiser_id: str, audience_id: str) -> bytes:
    hexed = os.urandom(32 * USERS).hex()
    cells = ",".join(
        f'[{{"id":"{hexed[i * 64 : i * 64 + 64]}","audience_ids":["{audience_id}"]}}]' for i in range(USERS)
    )
    head = orjson.dumps({"advertiser_ids": [advertiser_id], "action": "add", "id_schema": ["EMAIL_SHA256"]})
    return head[:-1] + b',"batch_data":[' + cells.encode() + b"]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=49.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxProcess(f"{tmp}/bench.db", valid_after_seconds=0) as sandbox,
    ):
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        headers = {"Access-Token": sandbox.access_token, "Content-Type": "application/json"}
        created = session.post(
            sandbox.base_url + "segment/audience/",
            json={
                "advertiser_id": sandbox.advertiser_id,
                "action": "create",
                "custom_audience_name": "bench",
            },
            headers=headers,
        ).json()
        audience_id = created["data"]["audience_id"]
        total = int(args.seconds * args.rate)
        bodies = [payload(sandbox.advertiser_id, audience_id) for _ in range(min(total, 60))]
        codes: list[int] = []
        latencies: list[float] = []
        lock = threading.Lock()

        def send(number: int) -> None:
            sent_at = time.perf_counter()
            answer = session.post(
                sandbox.base_url + "segment/mapping/",
                data=bodies[number % len(bodies)],
                headers=headers,
                timeout=60,
            )
            with lock:
                latencies.append(time.perf_counter() - sent_at)
                codes.append(answer.json()["code"] if answer.status_code == 200 else answer.status_code)

        emulator = psutil.Process(sandbox.process.pid)
        cpu_before = sum(emulator.cpu_times()[:2])
        started = next_send = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            for number in range(total):
                time.sleep(max(0.0, next_send - time.perf_counter()))
                pool.submit(send, number)
                next_send = max(next_send, time.perf_counter() - 0.002) + 1 / args.rate
        elapsed = time.perf_counter() - started
        emulator_cpu = (sum(emulator.cpu_times()[:2]) - cpu_before) / elapsed
        latencies.sort()
        stats = sandbox.stats()
        ok = codes.count(0)
        print(f"payload size, MB                 {len(bodies[0]) / 1e6:.2f}")
        print(f"requests sent                    {total}")
        print(f"sustained requests/s             {total / elapsed:.1f}")
        print(f"sustained users/s                {ok * USERS / elapsed:,.0f}")
        print(f"answers not code 0               {total - ok}")
        print(f"emulator peak requests in 1 s    {stats['peak_requests_per_second']}")
        print(
            f"answer latency p50 / p99, ms     {latencies[len(latencies) // 2] * 1000:.0f} / "
            f"{latencies[int(len(latencies) * 0.99)] * 1000:.0f}"
        )
        per_request_ms = emulator_cpu * elapsed / total * 1000
        print(f"emulator CPU, share of one core  {emulator_cpu:.0%} ({per_request_ms:.1f} ms a request)")
        print(f"members stored                   {stats['audiences'][audience_id]['members']:,}")


if __name__ == "__main__":
    main()
