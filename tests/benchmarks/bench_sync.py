"""How close do we get to TikTok's limit? One command, one table, everything on this machine.

    .venv/bin/python tests/benchmarks/bench_sync.py [--users 1000000] [--big 5000000] [--quick]

1. API ceiling utilisation: requests/s our hook + limiter + threads sustain against the emulator
   answering each request after 250 ms (goal >= 0.9 x 50).
2. End to end, N entrants from a SQLite warehouse to the emulator (email + phone + device id):
   SyncAudienceOperator in a real ``airflow dags test`` vs. a one-request-at-a-time uploader (how
   several peers upload) vs. the theoretical ceiling (50 requests/s x 10,000 users).
3. Peak RSS of streaming preparation for N vs. 5N entrants (flat means within 1.5x).
4. Resume cost: a sync killed (SIGKILL) at 50 % of its batches, then retried: requests of the retry
   divided by the batches of the sync.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from airflow_provider_tiktok.audience.batching import UserBatch  # noqa: E402
from airflow_provider_tiktok.hooks.tiktok import TikTokHook  # noqa: E402
from airflow_provider_tiktok.sandbox.process import SandboxProcess  # noqa: E402
from airflow_provider_tiktok.sync.ratelimit import SlidingWindowLimiter  # noqa: E402
from airflow_provider_tiktok.sync.upload import upload_batches  # noqa: E402
from demo.seed import generate_entrants  # noqa: E402
from tests.benchmarks.bench_prepare import peak_rss_child  # noqa: E402
from tests.integration.harness import AIRFLOW  # noqa: E402

MATCH = {"email": "email", "phone": "phone", "idfa": "idfa", "gaid": "gaid"}


def api_ceiling(work: Path, seconds: float = 12.0) -> float:
    """Small batches so neither side's CPU is the limit: only latency and the limiter are."""
    with SandboxProcess(work / "ceiling.db", latency_ms=250, valid_after_seconds=0) as sandbox:
        os.environ["AIRFLOW_CONN_TIKTOK_BENCH"] = sandbox.connection_json()
        hook = TikTokHook("tiktok_bench", request_gate=SlidingWindowLimiter(50), request_retry_limit=3)
        audience_id = hook.create_audience(sandbox.advertiser_id, "ceiling")
        digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(100)]
        import pyarrow as pa

        batch = UserBatch(1, ("EMAIL_SHA256",), (pa.array(digests),))
        count = int(seconds * 50)
        started = time.perf_counter()
        upload_batches(
            (UserBatch(n, batch.id_schema, batch.columns) for n in range(count)),
            lambda b: hook.map_batch("add", sandbox.advertiser_id, [audience_id], b),
            concurrency=24,
            on_outcome=lambda outcome: None,
        )
        elapsed = time.perf_counter() - started
        codes = sandbox.stats()["requests"]["segment/mapping/"]
        assert codes.get("40100") is None, f"we exceeded the limit: {codes}"
        return count / elapsed


def seed_sqlite(path: Path, users: int) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        for start in range(0, users, 250_000):
            frame, _ = generate_entrants(min(250_000, users - start), seed=start + 1, days=1)
            frame["user_id"] = [f"b{start + i:08d}" for i in range(len(frame))]
            frame.to_sql("entrants", connection, if_exists="append", index=False)
    engine.dispose()


def airflow_env(work: Path, sandbox: SandboxProcess, warehouse: Path, spec: dict) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(work / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
        "TIKTOK_TEST_SPEC": json.dumps(spec),
    }


def prepare_airflow(work: Path) -> None:
    dags = work / "airflow" / "dags"
    dags.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "integration" / "spec_dag.py", dags / "spec_dag.py")
    env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)


def sync_task(audience: str, **extra) -> dict:
    return {
        "task_id": "sync",
        "audience_name": audience,
        "sql": "SELECT * FROM entrants ORDER BY rowid",
        "warehouse_conn_id": "warehouse",
        "match_fields": MATCH,
        "default_phone_country": "US",
        "chunk_size": 50_000,
        **extra,
    }


def results_row(warehouse: Path, dag_id: str) -> dict:
    with sqlite3.connect(warehouse) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM tiktok_audience_sync_results WHERE dag_id = ?", (dag_id,)).fetchone())


def operator_users_per_second(work: Path, warehouse: Path, latency_ms: float) -> tuple[float, int]:
    with SandboxProcess(work / "e2e.db", latency_ms=latency_ms, valid_after_seconds=0) as sandbox:
        spec = {"dag_id": "bench_e2e", "tasks": [sync_task("bench e2e", concurrency=16)]}
        started = time.perf_counter()
        done = subprocess.run(
            [AIRFLOW, "dags", "test", "bench_e2e"],
            env=airflow_env(work, sandbox, warehouse, spec),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(done.stdout[-3000:])
        row = results_row(warehouse, "bench_e2e")
        return row["synced"] / wall, row["synced"]


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


def one_at_a_time_users_per_second(work: Path, warehouse: Path, latency_ms: float) -> float:
    """The peers' way: per-row Python normalisation, one 10,000-user request at a time."""
    with SandboxProcess(work / "naive.db", latency_ms=latency_ms, valid_after_seconds=0) as sandbox:
        session = requests.Session()
        headers = {"Access-Token": sandbox.access_token}
        audience = session.post(
            sandbox.base_url + "segment/audience/",
            headers=headers,
            json={"advertiser_id": sandbox.advertiser_id, "action": "create", "custom_audience_name": "naive"},
        ).json()["data"]["audience_id"]
        schema = ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"]
        started, sent, rows = time.perf_counter(), 0, []

        def flush() -> None:
            nonlocal sent
            body = {"advertiser_ids": [sandbox.advertiser_id], "action": "add", "id_schema": schema, "batch_data": rows}
            assert session.post(sandbox.base_url + "segment/mapping/", json=body, headers=headers).json()["code"] == 0
            sent += len(rows)
            rows.clear()

        with sqlite3.connect(warehouse) as db:
            for _, email, phone, idfa, gaid in db.execute("SELECT user_id, email, phone, idfa, gaid FROM entrants"):
                ids = []
                email = (email or "").strip().lower()
                ids.append(hashlib.sha256(email.encode()).hexdigest() if EMAIL.match(email) else None)
                digits = re.sub(r"\D", "", phone or "")
                phone_ok = len(digits) == 10 or (len(digits) == 11 and digits[0] == "1")
                ids.append(hashlib.sha256(("+1" + digits[-10:]).encode()).hexdigest() if phone_ok else None)
                for device in (idfa, gaid):
                    value = (device or "").strip().lower()
                    ids.append(hashlib.sha256(value.encode()).hexdigest() if len(value) == 36 else None)
                if any(ids):
                    rows.append([{"id": d, "audience_ids": [audience]} if d else {} for d in ids])
                if len(rows) == 10_000:
                    flush()
            if rows:
                flush()
        return sent / (time.perf_counter() - started)


def resume_ratio(work: Path, users: int) -> tuple[float, int, int]:
    warehouse = work / "resume.db"
    seed_sqlite(warehouse, users)
    with SandboxProcess(work / "resume-sandbox.db", latency_ms=250, valid_after_seconds=0) as sandbox:
        spec = {
            "dag_id": "bench_resume",
            "tasks": [sync_task("bench resume", batch_size=1000, max_qps=4, concurrency=2)],
        }
        env = airflow_env(work, sandbox, warehouse, spec)
        first = subprocess.Popen(
            [AIRFLOW, "dags", "test", "bench_resume"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def mapping_requests() -> int:
            return sum(sandbox.stats()["requests"].get("segment/mapping/", {}).values())

        with sqlite3.connect(warehouse) as db:
            while True:
                staged = (
                    db.execute(
                        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'tiktok_audience_sync_ledger_batches'"
                    ).fetchone()[0]
                    and db.execute("SELECT COUNT(*) FROM tiktok_audience_sync_ledger_batches").fetchone()[0]
                )
                if staged and db.execute("SELECT status FROM tiktok_audience_sync_ledger").fetchone()[0] == "staged":
                    break
                time.sleep(0.2)
            batches = db.execute("SELECT COUNT(*) FROM tiktok_audience_sync_ledger_batches").fetchone()[0]
        while mapping_requests() < batches // 2:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        before = mapping_requests()
        with sqlite3.connect(warehouse) as db:
            run_id = db.execute("SELECT run_id FROM tiktok_audience_sync_ledger").fetchone()[0]
        subprocess.run(
            [AIRFLOW, "tasks", "test", "bench_resume", "sync", run_id], env=env, capture_output=True, check=True
        )
        retry = mapping_requests() - before
        return retry / batches, retry, batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=5_000_000)
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--resume-users", type=int, default=100_000)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ceiling = api_ceiling(work)
        rows.append(
            ("1. sustained requests/s at 250 ms latency (goal >= 45)", f"{ceiling:.1f} ({ceiling / 50:.0%} of 50)")
        )
        prepare_airflow(work)
        warehouse = work / "warehouse.db"
        seed_sqlite(warehouse, args.users)
        ours, synced = operator_users_per_second(work, warehouse, args.latency_ms)
        naive = one_at_a_time_users_per_second(work, warehouse, args.latency_ms)
        rows.append(
            (
                f"2. end-to-end users/s, {args.users:,} entrants: SyncAudienceOperator",
                f"{ours:,.0f} ({synced:,} synced)",
            )
        )
        rows.append(
            ("   one request at a time (peers' approach)", f"{naive:,.0f} ({ours / naive:.1f}x slower than ours)")
        )
        rows.append(("   theoretical ceiling (50 req/s x 10,000 users)", "500,000"))
        small, big = peak_rss_child(args.users), peak_rss_child(args.big)
        rows.append(
            (
                f"3. peak RSS streaming {args.users:,} vs {args.big:,}",
                f"{small['peak_rss_mb']} vs {big['peak_rss_mb']} MB ({big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x)",
            )
        )
        ratio, retry, batches = resume_ratio(work, args.resume_users)
        rows.append(
            ("4. resume after SIGKILL at 50 %: retry requests / batches", f"{ratio:.2f} ({retry} of {batches})")
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
