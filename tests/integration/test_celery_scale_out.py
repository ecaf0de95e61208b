"""Scale-out on Airflow's own distributed engine: CeleryExecutor, Redis, Postgres, two workers.

Everything runs on loopback and is stopped at the end: a real Redis and PostgreSQL server, an Airflow
api-server, scheduler, dag-processor, triggerer and two Celery workers, plus the emulator. The main
example DAG is triggered for one day with four steps; the test checks that sync tasks ran on both
workers, that the shared 50 requests/s budget held (no 40100), and that every step's results are exact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy

from airflow_provider_tiktok.sandbox.process import SandboxProcess, free_port
from demo.seed import seed
from tests.integration.dags.test_example_dags import DAGS, MAIN, assert_exact_per_step
from tests.integration.harness import AIRFLOW

ROOT = Path(__file__).resolve().parents[2]
ENTRANTS = 20_000


class Cluster:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process' lifetime
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.work.glob("*.log")))


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def test_main_dag_on_celery_with_two_workers_stays_within_budget_and_is_exact(postgres_server, tmp_path):
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is missing: `make test` installs it (scripts/ensure-test-services.sh)"
    pg = postgres_server
    base = f"postgresql+psycopg2://{pg['login']}@{pg['host']}:{pg['port']}"
    engine = sqlalchemy.create_engine(f"{base}/warehouse", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS airflow_meta")
        connection.exec_driver_sql("CREATE DATABASE airflow_meta")
        connection.exec_driver_sql("DROP TABLE IF EXISTS tiktok_audience_sync_results")
        connection.exec_driver_sql("DROP TABLE IF EXISTS tiktok_audience_sync_ledger_batches")
        connection.exec_driver_sql("DROP TABLE IF EXISTS tiktok_audience_sync_ledger")
    engine.dispose()
    # Unpausing makes the scheduler run the latest complete day: put the entrants in that day.
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    seed(f"{base}/warehouse", ENTRANTS, days=1, start=today - timedelta(days=1))

    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    for source in DAGS.iterdir():
        if source.suffix in (".py", ".yaml"):
            shutil.copy(source, home / "dags" / source.name)
    redis_port, api_port = free_port(), free_port()
    cluster = Cluster(tmp_path)
    with SandboxProcess(tmp_path / "sandbox.db", valid_after_seconds=3) as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "PYTHONPATH": str(ROOT),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.celery_hostname.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "scale-out-test-secret",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{base}/airflow_meta",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg['login']}@{pg['host']}:{pg['port']}/airflow_meta",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
            "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps({"conn_type": "postgres", **pg}),
        }
        try:
            cluster.start("redis", [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], env)
            run(env, "db", "migrate")
            run(env, "pools", "set", "tiktok_api", "4", "TikTok API budget")
            cluster.start("api-server", [AIRFLOW, "api-server", "--port", str(api_port)], env)
            cluster.start("scheduler", [AIRFLOW, "scheduler"], env)
            cluster.start("dag-processor", [AIRFLOW, "dag-processor"], env)
            cluster.start("triggerer", [AIRFLOW, "triggerer"], env)
            for name in ("worker-a", "worker-b"):
                cluster.start(
                    name,
                    [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "2"],
                    {**env, "TIKTOK_WORKER_NAME": name, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
                )
            deadline = time.monotonic() + 180
            while MAIN not in run(env, "dags", "list", "-o", "plain"):
                assert time.monotonic() < deadline, "the dag-processor never parsed the DAG\n" + cluster.logs()
                time.sleep(3)
            run(env, "dags", "unpause", MAIN)
            meta = sqlalchemy.create_engine(f"{base}/airflow_meta")
            state = ""
            deadline = time.monotonic() + 420
            while state not in ("success", "failed"):
                assert time.monotonic() < deadline, f"run still {state!r}\n" + cluster.logs()
                time.sleep(3)
                found = pd.read_sql("SELECT state FROM dag_run", meta)["state"]
                state = found.iloc[0] if len(found) == 1 else ""
            assert state == "success", cluster.logs()
            hosts = pd.read_sql(
                "SELECT hostname FROM task_instance WHERE dag_id = %(d)s AND task_id = 'sync_step'",
                meta,
                params={"d": MAIN},
            )["hostname"]
            meta.dispose()
        finally:
            cluster.stop()
        assert {h.rsplit("-", 2)[-2] + "-" + h.rsplit("-", 1)[-1] for h in hosts} == {"worker-a", "worker-b"}, list(
            hosts
        )
        stats = sandbox.stats()
        codes = {code for endpoint in stats["requests"].values() for code in endpoint}
        assert "40100" not in codes and stats["peak_requests_per_second"] <= 50
        warehouse = sqlalchemy.create_engine(f"{base}/warehouse")
        rows = pd.read_sql("SELECT * FROM tiktok_audience_sync_results", warehouse).to_dict("records")
        warehouse.dispose()
        assert_exact_per_step(sandbox, rows, ENTRANTS)
    assert all(p.poll() is not None for p in cluster.processes)
