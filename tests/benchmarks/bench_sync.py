"""How close do we get to TikTok's ceiling? One command, one table, everything on this machine, one run.

    .venv/bin/python tests/benchmarks/bench_sync.py [--users 1000000] [--big 5000000] [--quick]

1. API ceiling utilisation: requests/s our hook + limiter + threads sustain against the emulator
   answering each request after 250 ms (goal >= 0.9 x 50).
2. N entrants x 4 identifiers from a SQLite warehouse, emulator in sink mode (it checks every request but
   stores no member, so the client side is what is measured), 250 ms latency, SyncAudienceOperator in a real
   ``airflow dags test``: task-internal users/s (first source row read -> last acknowledgement), end-to-end
   wall users/s (with Airflow start-up), time to first request, CPU-seconds per 1M users, staged bytes per
   user (and left after the sync), peak RSS of the task; the same for 5N; the one-request-at-a-time uploader
   (how peers upload) on both; the ceiling (50 requests/s x 10,000 users).
3. Resume cost: a sync killed (SIGKILL) at 50 % of its batches, then retried: requests of the retry
   divided by the batches of the sync.
4. Mirror mode: N users mirrored (strict emulator), then 1 % leave, 1 % join and 1 % change email, mirrored
   again: users sent by the second run over the first's, task time ratio, and exact membership.
Figures are printed beside their goals, never asserted.
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
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import requests
import sqlalchemy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from airflow_provider_tiktok.audience import PrepareOptions, UserPreparer, iter_batches  # noqa: E402
from airflow_provider_tiktok.audience.batching import UserBatch  # noqa: E402
from airflow_provider_tiktok.audience.identifiers import FieldRules  # noqa: E402
from airflow_provider_tiktok.hooks.tiktok import TikTokHook  # noqa: E402
from airflow_provider_tiktok.sandbox.process import SandboxProcess  # noqa: E402
from airflow_provider_tiktok.sync.ratelimit import SlidingWindowLimiter  # noqa: E402
from airflow_provider_tiktok.sync.upload import upload_batches  # noqa: E402
from demo.seed import generate_entrants  # noqa: E402
from tests.integration.harness import AIRFLOW, expected_sync  # noqa: E402
from tests.integration.operators.test_mirror import churn  # noqa: E402

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
            on_outcome=lambda outcome, batch: None,
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
        latest = "SELECT * FROM tiktok_audience_sync_results WHERE dag_id = ? ORDER BY rowid DESC LIMIT 1"
        return dict(db.execute(latest, (dag_id,)).fetchone())


def peak_rss_mb_while(process: subprocess.Popen) -> float:
    """Largest RSS of any process in the tree while it runs (the task runs inside ``airflow dags test``)."""
    peak = 0.0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            for proc in [root, *root.children(recursive=True)]:
                peak = max(peak, proc.memory_info().rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.1)
    return peak


def run_sync(
    work: Path, sandbox: SandboxProcess, warehouse: Path, dag_id: str, task: dict
) -> tuple[float, dict, float]:
    """One ``airflow dags test`` run: wall seconds, its results row, peak RSS."""
    env = airflow_env(work, sandbox, warehouse, {"dag_id": dag_id, "tasks": [task]})
    started = time.perf_counter()
    process = subprocess.Popen([AIRFLOW, "dags", "test", dag_id], env=env, stdout=subprocess.PIPE, text=True)
    peak: list[float] = []
    sampler = threading.Thread(target=lambda: peak.append(peak_rss_mb_while(process)))
    sampler.start()
    output = process.communicate()[0]
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(output[-3000:])
    return wall, results_row(warehouse, dag_id), peak[0]


def staged_bytes_per_user(warehouse: Path, users: int = 200_000) -> float:
    """The ledger's payload size for this data: every staged batch's bytes over its users."""
    options = PrepareOptions(MATCH, "user_id", FieldRules(default_phone_country="US"))
    engine = sqlalchemy.create_engine(f"sqlite:///{warehouse}")
    frame = pd.read_sql(f"SELECT * FROM entrants LIMIT {users}", engine)
    engine.dispose()
    batches = list(iter_batches(UserPreparer(options).prepare([frame]), options.id_schema))
    return sum(len(b.to_bytes()) for b in batches) / sum(len(b) for b in batches)


def payloads_left(warehouse: Path) -> int:
    with sqlite3.connect(warehouse) as db:
        return db.execute(
            "SELECT COUNT(*) FROM tiktok_audience_sync_ledger_batches WHERE payload IS NOT NULL"
        ).fetchone()[0]


def operator_figures(work: Path, warehouse: Path, latency_ms: float, dag_id: str) -> dict:
    with SandboxProcess(
        work / f"{dag_id}.db", latency_ms=latency_ms, valid_after_seconds=0, mapping_mode="sink"
    ) as sandbox:
        wall, row, peak = run_sync(work, sandbox, warehouse, dag_id, sync_task(dag_id, concurrency=16))
    return {
        "wall_users_per_second": row["synced"] / wall,
        "internal_users_per_second": row["users_per_second"],
        "synced": row["synced"],
        "first_request": row["time_to_first_request_seconds"],
        "cpu_per_million": row["cpu_seconds"] / row["synced"] * 1e6,
        "peak_rss_mb": peak,
        "phases": {p: row.get(f"{p}_seconds") for p in ("read", "prepare", "stage", "upload", "report")},
    }


def source_read_figures(warehouse: Path) -> dict[str, float]:
    """Rows/s of each source reader on the same rows (8 columns, the sync uses 5): SQLite's cursor narrowed to
    those columns and as written, SQLAlchemy + pandas; the same rows in PostgreSQL: ADBC (Arrow-native) and
    SQLAlchemy + pandas (the fallback for other common-sql connections)."""
    import pyarrow as pa

    from airflow_provider_tiktok.warehouse import Warehouse
    from tests.integration.harness import postgres_server_running

    sql, used = "SELECT * FROM entrants", ["user_id", "email", "phone", "idfa", "gaid"]

    def rows_per_second(chunks) -> float:
        started = time.perf_counter()
        rows = sum(len(chunk) for chunk in chunks)
        return rows / (time.perf_counter() - started)

    os.environ["AIRFLOW_CONN_BENCH_SQLITE"] = json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
    sqlite = Warehouse("bench_sqlite")
    figures = {
        "sqlite narrowed": rows_per_second(sqlite.read_chunks(sql, 50_000, None, used)),
        "sqlite as written": rows_per_second(sqlite.read_chunks(sql, 50_000)),
        "sqlite sqlalchemy": rows_per_second(sqlite._read_sqlalchemy(sql, 50_000, None)),
    }
    with sqlite3.connect(warehouse) as db:
        cursor = db.execute(sql)
        names = [column[0] for column in cursor.description]
        table = pa.table(dict(zip(names, map(list, zip(*cursor.fetchall(), strict=True)), strict=True)))
    with postgres_server_running() as server:
        os.environ["AIRFLOW_CONN_BENCH_POSTGRES"] = json.dumps({"conn_type": "postgres", **server})
        postgres = Warehouse("bench_postgres")
        import adbc_driver_postgresql.dbapi

        uri = f"postgresql://{server['login']}@{server['host']}:{server['port']}/{server['schema']}"
        with adbc_driver_postgresql.dbapi.connect(uri) as connection, connection.cursor() as cursor:
            cursor.adbc_ingest("entrants", table, mode="create")
            connection.commit()
        figures["postgres adbc"] = rows_per_second(postgres.read_chunks(sql, 50_000, None, used))
        figures["postgres sqlalchemy"] = rows_per_second(postgres._read_sqlalchemy(sql, 50_000, None))
    return figures


def upload_method_figures(work: Path, warehouse: Path, latency_ms: float) -> dict[str, float]:
    """Segment API vs customer files on the same users (email only: a file audience has one id type),
    strict emulator for both (files are always read in full), task-internal users/s."""
    figures = {}
    for method in ("segment", "file"):
        with SandboxProcess(work / f"{method}.db", latency_ms=latency_ms, valid_after_seconds=0) as sandbox:
            task = sync_task(f"by {method}", upload_method=method, match_fields={"email": "email"}, concurrency=16)
            _, row, _ = run_sync(work, sandbox, warehouse, f"bench_{method}", task)
            figures[method] = row["users_per_second"]
    return figures


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


def one_at_a_time_users_per_second(work: Path, warehouse: Path, latency_ms: float) -> float:
    """The peers' way: per-row Python normalisation, one 10,000-user request at a time."""
    with SandboxProcess(
        work / "naive.db", latency_ms=latency_ms, valid_after_seconds=0, mapping_mode="sink"
    ) as sandbox:
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
                ready = db.execute(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'tiktok_audience_sync_ledger'"
                ).fetchone()[0]
                row = ready and db.execute("SELECT status FROM tiktok_audience_sync_ledger").fetchone()
                if row and row[0] == "pending":  # every user staged
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


def mirror_figures(work: Path, users: int) -> dict:
    """N mirrored, then 1 % leave, 1 % join, 1 % change email, mirrored again; strict emulator, exact check."""
    warehouse = work / "mirror.db"
    frame, truths = generate_entrants(users, seed=31, days=1)
    frame = frame.assign(user_id=[f"m{i:08d}" for i in range(len(frame))])  # no repeats: one row a user
    engine = sqlalchemy.create_engine(f"sqlite:///{warehouse}")
    write = lambda f: f.to_sql("entrants", engine, if_exists="replace", index=False, chunksize=100_000)  # noqa: E731
    write(frame)
    task = sync_task("bench mirror", action="mirror", concurrency=16)
    with SandboxProcess(work / "mirror-sandbox.db", latency_ms=250, valid_after_seconds=0) as sandbox:
        first_wall, first, _ = run_sync(work, sandbox, warehouse, "bench_mirror", task)
        frame, truths = churn(frame, truths, 1, every=100)
        write(frame)
        second_wall, second, _ = run_sync(work, sandbox, warehouse, "bench_mirror", task)
        members = set(sandbox.members(second["audience_id"]))
    engine.dispose()
    expected = expected_sync(frame, truths)["members"]
    return {
        "first_sent": first["synced"],
        "second_sent": second["synced"] + second["removed"],
        "time_ratio": second["duration_seconds"] / first["duration_seconds"],
        "walls": (first_wall, second_wall),
        "exact": members == expected,
        "members": len(members),
    }


def versus(figures: dict) -> str:
    ours, naive = figures["wall_users_per_second"], figures["naive"]
    return f"{ours:,.0f} vs one-at-a-time {naive:,.0f} ({ours / naive:.1f}x)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=5_000_000)
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--resume-users", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    args = parser.parse_args()
    if args.quick:
        args.users, args.big, args.resume_users = 60_000, 120_000, 20_000
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ceiling = api_ceiling(work)
        rows.append(("1. sustained requests/s at 250 ms latency", f"{ceiling:.1f} ({ceiling / 50:.0%} of 50)", ">= 45"))
        prepare_airflow(work)
        figures = {}
        for size, name in ((args.users, "n"), (args.big, "big")):
            warehouse = work / f"warehouse-{name}.db"
            seed_sqlite(warehouse, size)
            figures[name] = operator_figures(work, warehouse, args.latency_ms, f"bench_{name}")
            figures[name]["naive"] = one_at_a_time_users_per_second(work, warehouse, args.latency_ms)
            if name == "n":
                figures[name]["reads"] = source_read_figures(warehouse)
                figures[name]["staged_bytes"] = staged_bytes_per_user(warehouse)
                figures[name]["payloads_left"] = payloads_left(warehouse)
                figures[name]["methods"] = upload_method_figures(work, warehouse, args.latency_ms)
            warehouse.unlink()
        n, big = figures["n"], figures["big"]
        rows += [
            (
                f"2. task-internal users/s, {args.users:,} x 4 ids, sink",
                f"{n['internal_users_per_second']:,.0f}",
                ">= 250,000",
            ),
            ("   time to first request after the first chunk (s)", f"{n['first_request']:.2f}", "<= 2"),
            ("   CPU-seconds of the sync task per 1M users", f"{n['cpu_per_million']:.2f}", "<= 4"),
            (
                "   staged bytes per user (left after the sync)",
                f"{n['staged_bytes']:.1f} ({n['payloads_left']} payloads)",
                "<= 70 (0)",
            ),
            ("   phases (s)", " ".join(f"{k}={v}" for k, v in n["phases"].items()), ""),
            (
                f"   end-to-end wall users/s, {args.users:,}",
                versus(n),
                "",
            ),
            (
                f"   end-to-end wall users/s, {args.big:,}",
                versus(big),
                ">= 10x",
            ),
            (f"   task-internal users/s, {args.big:,}", f"{big['internal_users_per_second']:,.0f}", ""),
            ("   theoretical ceiling (50 req/s x 10,000 users)", "500,000", ""),
            (
                f"   upload_method segment vs file, {args.users:,} emails, strict emulator",
                f"{n['methods']['segment']:,.0f} vs {n['methods']['file']:,.0f} users/s",
                "",
            ),
            (
                f"   source reads, {args.users:,} rows x 8 columns (5 used), SQLite: rows/s",
                "narrowed {sqlite narrowed:,.0f}, as written {sqlite as written:,.0f}".format_map(n["reads"]),
                "",
            ),
            ("     SQLite via SQLAlchemy + pandas", f"{n['reads']['sqlite sqlalchemy']:,.0f}", ""),
            (
                "     PostgreSQL: ADBC (Arrow) vs SQLAlchemy + pandas",
                "{postgres adbc:,.0f} vs {postgres sqlalchemy:,.0f}".format_map(n["reads"]),
                "",
            ),
            (
                f"   peak RSS of the task, {args.big:,} vs {args.users:,}",
                f"{big['peak_rss_mb']:.0f} vs {n['peak_rss_mb']:.0f} MB ({big['peak_rss_mb'] / n['peak_rss_mb']:.2f}x)",
                "<= 1.5x",
            ),
        ]
        ratio, retry, batches = resume_ratio(work, args.resume_users)
        rows.append(
            (
                "3. resume after SIGKILL at 50 %: retry requests / batches",
                f"{ratio:.2f} ({retry} of {batches})",
                "<= 0.55",
            )
        )
        mirror = mirror_figures(work, args.users)
        sent_share = mirror["second_sent"] / mirror["first_sent"]
        rows += [
            (
                f"4. mirror {args.users:,}, then 1 % left/joined/changed: users sent",
                f"{mirror['second_sent']:,} of {mirror['first_sent']:,} ({sent_share:.1%})",
                "<= 4.5 %",
            ),
            (
                "   second run's task time / first run's",
                f"{mirror['time_ratio']:.2f} (walls {mirror['walls'][0]:.0f} s, {mirror['walls'][1]:.0f} s)",
                "<= 0.5",
            ),
            (
                "   emulator membership equals the expected set",
                f"{mirror['exact']} ({mirror['members']:,} members)",
                "True",
            ),
        ]
    width = max(len(k) for k, _, _ in rows)
    value_width = max(len(v) for _, v, _ in rows)
    for key, value, goal in rows:
        print(f"{key:<{width}}  {value:<{value_width}}  {('goal ' + goal) if goal else ''}")


if __name__ == "__main__":
    main()
