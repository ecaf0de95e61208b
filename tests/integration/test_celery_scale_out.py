"""Scale-out on Airflow's own distributed engine: CeleryExecutor, Redis, Postgres, two workers.

Everything runs on loopback and is stopped at the end: a real Redis and PostgreSQL server, an Airflow
api-server, scheduler, dag-processor, triggerer and two Celery workers, plus the emulator.

- The main example DAG is triggered for one day with four steps; the test checks that sync tasks ran on
  both workers, that the shared 50 requests/s budget held (no 40100), and that every step's results are exact.
- Issue 14 row 6: 3, then 6, ``SyncAudienceOperator`` tasks with the default ``max_qps`` run at once on one
  token, with no ``rate_budget_url`` set: the tasks must find the Redis broker themselves and share its
  budget. The test prints the emulator's peak requests/s and the combined rate, and asserts the peak.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import redis
import sqlalchemy

from airflow_provider_tiktok.sandbox.process import SandboxProcess, free_port
from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS
from demo.seed import seed
from tests.integration.dags.test_example_dags import DAGS, MAIN, assert_exact_per_step
from tests.integration.harness import AIRFLOW

ROOT = Path(__file__).resolve().parents[2]
ENTRANTS = 20_000
SYNC_TABLES = ("tiktok_audience_sync_results", "tiktok_audience_sync_ledger_batches", "tiktok_audience_sync_ledger")


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


@dataclass
class Airflow:
    """A running cluster: its environment (for CLI calls), metadata database, processes and broker."""

    env: dict[str, str]
    meta: sqlalchemy.Engine
    cluster: Cluster
    redis_url: str

    def wait_for_dags(self, *dag_ids: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not set(dag_ids) <= set(pd.read_sql("SELECT dag_id FROM dag", self.meta)["dag_id"]):
            assert time.monotonic() < deadline, "the dag-processor never parsed the DAGs\n" + self.cluster.logs()
            time.sleep(2)

    def wait_for_run(
        self, dag_id: str, timeout: float = 420, *, every: float = 1.0, watch: Callable[[], object] = lambda: None
    ) -> str:
        """The run's final state; ``watch`` is called at every poll (e.g. to sample the emulator)."""
        state = ""
        deadline = time.monotonic() + timeout
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, f"{dag_id} still {state!r}\n" + self.cluster.logs()
            time.sleep(every)
            watch()
            found = pd.read_sql("SELECT state FROM dag_run WHERE dag_id = %(d)s", self.meta, params={"d": dag_id})
            state = found["state"].iloc[0] if len(found) == 1 else ""
        return state

    def task_instances(self, dag_id: str) -> pd.DataFrame:
        return pd.read_sql(
            "SELECT task_id, hostname, start_date, end_date FROM task_instance WHERE dag_id = %(d)s",
            self.meta,
            params={"d": dag_id},
        )


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def warehouse_url(pg: dict) -> str:
    return f"postgresql+psycopg2://{pg['login']}@{pg['host']}:{pg['port']}/warehouse"


@contextmanager
def celery_airflow(
    pg: dict, work: Path, sandbox: SandboxProcess, dag_files: dict[str, str], worker_concurrency: int = 2
) -> Iterator[Airflow]:
    """A fresh metadata database and sync tables, then the cluster running ``dag_files`` (name -> source);
    every process is stopped when the block ends."""
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is missing: `make test` installs it (scripts/ensure-test-services.sh)"
    base = f"postgresql+psycopg2://{pg['login']}@{pg['host']}:{pg['port']}"
    engine = sqlalchemy.create_engine(f"{base}/warehouse", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS airflow_meta")
        connection.exec_driver_sql("CREATE DATABASE airflow_meta")
        for table in SYNC_TABLES:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()
    home = work / "airflow"
    (home / "dags").mkdir(parents=True)
    for name, source in dag_files.items():
        (home / "dags" / name).write_text(source)
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
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
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg['login']}@{pg['host']}:{pg['port']}/airflow_meta",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps({"conn_type": "postgres", **pg}),
    }
    cluster = Cluster(work)
    meta = sqlalchemy.create_engine(f"{base}/airflow_meta")
    try:
        cluster.start("redis", [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], env)
        run(env, "db", "migrate")
        cluster.start("api-server", [AIRFLOW, "api-server", "--port", str(api_port)], env)
        cluster.start("scheduler", [AIRFLOW, "scheduler"], env)
        cluster.start("dag-processor", [AIRFLOW, "dag-processor"], env)
        cluster.start("triggerer", [AIRFLOW, "triggerer"], env)
        worker = [AIRFLOW, "celery", "worker", "--concurrency", str(worker_concurrency)]
        for name in ("worker-a", "worker-b"):
            cluster.start(
                name,
                [*worker, "--celery-hostname", f"{name}@%h"],
                {**env, "TIKTOK_WORKER_NAME": name, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
            )
        yield Airflow(env, meta, cluster, redis_url)
    finally:
        meta.dispose()
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.processes)


def worker_name(hostname: str) -> str:
    return hostname.rsplit("-", 2)[-2] + "-" + hostname.rsplit("-", 1)[-1]


def test_main_dag_on_celery_with_two_workers_stays_within_budget_and_is_exact(postgres_server, tmp_path):
    pg = postgres_server
    with SandboxProcess(tmp_path / "sandbox.db", valid_after_seconds=3) as sandbox:
        dag_files = {p.name: p.read_text() for p in DAGS.iterdir() if p.suffix in (".py", ".yaml")}
        with celery_airflow(pg, tmp_path, sandbox, dag_files) as airflow:
            # Unpausing makes the scheduler run the latest complete day: put the entrants in that day.
            today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            seed(warehouse_url(pg), ENTRANTS, days=1, start=today - timedelta(days=1))
            run(airflow.env, "pools", "set", "tiktok_api", "4", "TikTok API budget")
            airflow.wait_for_dags(MAIN)
            run(airflow.env, "dags", "unpause", MAIN)
            state = airflow.wait_for_run(MAIN)
            assert state == "success", airflow.cluster.logs()
            hosts = airflow.task_instances(MAIN).query("task_id == 'sync_step'")["hostname"]
        assert {worker_name(h) for h in hosts} == {"worker-a", "worker-b"}, list(hosts)
        stats = sandbox.stats()
        codes = {code for endpoint in stats["requests"].values() for code in endpoint}
        assert "40100" not in codes and stats["peak_requests_per_second"] <= 50
        warehouse = sqlalchemy.create_engine(warehouse_url(pg))
        rows = pd.read_sql("SELECT * FROM tiktok_audience_sync_results", warehouse).to_dict("records")
        warehouse.dispose()
        assert_exact_per_step(sandbox, rows, ENTRANTS)


CONCURRENT_SYNCS = (3, 6)
MAPPING_REQUESTS = 1000
"""Per scenario: 20 s of work at the full budget, in batches of ``USERS_PER_REQUEST``."""
USERS_PER_REQUEST = 20
CONCURRENT_DAG = """
# N syncs on one token at once, each with the default max_qps (50): only a shared budget keeps them at 50/s.

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator

for syncs in SCENARIOS:
    with DAG(
        f"tiktok_concurrent_syncs_{syncs}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        is_paused_upon_creation=False,
        max_active_tasks=syncs,
    ) as dag:
        for number in range(syncs):
            SyncAudienceOperator(
                task_id=f"sync_{number}",
                audience_name=f"Concurrent {syncs} - {number}",
                warehouse_conn_id="tiktok_warehouse",
                sql="SELECT user_id, email FROM concurrent_entrants WHERE audience_name = :name ORDER BY user_id",
                parameters={"name": f"Concurrent {syncs} - {number}"},
                match_fields={"email": "email"},
                batch_size=USERS_PER_REQUEST,
            )
    globals()[dag.dag_id] = dag
"""


@dataclass(frozen=True)
class CeleryConcurrencyFigures:
    """One scenario under the scheduler. ``combined_per_second`` divides the mapping requests by the span of
    the sync tasks (first start to last end, from the metadata DB: it includes each task's start-up and DAG
    parse); ``steady_per_second`` is the emulator's count rising from a quarter to three quarters of them,
    while every sync uploads."""

    syncs: int
    requests: int
    rate_limited: int
    peak_per_second: int
    task_seconds: float
    steady_per_second: float
    workers: tuple[str, ...]
    all_at_once: bool

    @property
    def combined_per_second(self) -> float:
        return self.requests / self.task_seconds

    def __str__(self) -> str:
        return (
            f"{self.syncs} concurrent syncs on Celery: peak {self.peak_per_second} requests/s at the emulator, "
            f"combined {self.combined_per_second:.1f} requests/s ({self.combined_per_second / TIKTOK_MAX_QPS:.0%} "
            f"of {TIKTOK_MAX_QPS}; tasks' span {self.task_seconds:.1f} s), steady {self.steady_per_second:.1f} "
            f"requests/s ({self.steady_per_second / TIKTOK_MAX_QPS:.0%}), {self.requests} mapping requests, "
            f"{self.rate_limited} x 40100, "
            f"on {', '.join(self.workers)}"
        )


@dataclass(frozen=True)
class CeleryConcurrencyRun:
    figures: list[CeleryConcurrencyFigures]
    budget_reservations: int
    """Rate-budget scripts the broker's Redis ran (one per request that went through the shared budget)."""
    results: list[dict]
    logs: list[Path]
    """Worker and task logs."""


def seed_concurrent_entrants(pg: dict, scenarios: tuple[int, ...], requests: int) -> dict[str, set[str]]:
    """Each audience's users, ``requests`` batches per scenario (clean emails, so every user is synced);
    returns the digests each audience must hold."""
    rows = [
        (f"Concurrent {syncs} - {number}", f"{syncs}-{number}-{user}", f"user{user}.{number}.{syncs}@example.com")
        for syncs in scenarios
        for number in range(syncs)
        for user in range(requests // syncs * USERS_PER_REQUEST)
    ]
    frame = pd.DataFrame(rows, columns=["audience_name", "user_id", "email"])
    warehouse = sqlalchemy.create_engine(warehouse_url(pg))
    frame.to_sql("concurrent_entrants", warehouse, if_exists="replace", index=False)
    warehouse.dispose()
    return {
        name: {hashlib.sha256(email.encode()).hexdigest() for email in group["email"]}
        for name, group in frame.groupby("audience_name")
    }


def mapping_requests(stats: dict) -> int:
    return sum(stats["requests"].get("segment/mapping/", {}).values())


class MappingRequestCounts:
    """The emulator's mapping-request count, sampled at each call while a run goes on."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.sandbox = sandbox
        self.samples: list[tuple[float, int]] = []

    def __call__(self) -> None:
        self.samples.append((time.monotonic(), mapping_requests(self.sandbox.stats())))

    def middle_half_rate(self) -> float:
        """Requests/s between the samples where the count passed a quarter and three quarters of its final
        value: no start-up, no tail of the last sync."""
        final = self.samples[-1][1]
        first_time, first_count = next((t, c) for t, c in self.samples if c >= final / 4)
        last_time, last_count = [(t, c) for t, c in self.samples if c <= final * 3 / 4][-1]
        return (last_count - first_count) / (last_time - first_time)


def run_concurrent_syncs_on_celery(
    pg: dict, work: Path, sandbox: SandboxProcess, scenarios: tuple[int, ...] = CONCURRENT_SYNCS
) -> CeleryConcurrencyRun:
    """Each scenario's DAG triggered in turn on a fresh cluster whose workers have a slot for every sync
    (the default pool has 128); no ``rate_budget_url`` anywhere, so the tasks must pick the Redis broker."""
    source = CONCURRENT_DAG.replace("SCENARIOS", repr(scenarios)).replace("USERS_PER_REQUEST", str(USERS_PER_REQUEST))
    figures = []
    warehouse = sqlalchemy.create_engine(warehouse_url(pg))
    with celery_airflow(pg, work, sandbox, {"tiktok_concurrent_syncs.py": source}, max(scenarios) // 2 + 1) as af:
        af.wait_for_dags(*(f"tiktok_concurrent_syncs_{syncs}" for syncs in scenarios))
        for syncs in scenarios:
            dag_id = f"tiktok_concurrent_syncs_{syncs}"
            sandbox.reset_stats()
            run(af.env, "dags", "trigger", dag_id)
            counts = MappingRequestCounts(sandbox)
            assert af.wait_for_run(dag_id, every=0.5, watch=counts) == "success", af.cluster.logs()
            stats = sandbox.stats()
            tasks = af.task_instances(dag_id)
            figures.append(
                CeleryConcurrencyFigures(
                    syncs=syncs,
                    requests=mapping_requests(stats),
                    rate_limited=sum(codes.get("40100", 0) for codes in stats["requests"].values()),
                    peak_per_second=stats["peak_requests_per_second"],
                    task_seconds=(tasks["end_date"].max() - tasks["start_date"].min()).total_seconds(),
                    steady_per_second=counts.middle_half_rate(),
                    workers=tuple(sorted({worker_name(h) for h in tasks["hostname"]})),
                    all_at_once=len(tasks) == syncs and tasks["start_date"].max() < tasks["end_date"].min(),
                )
            )
        with redis.Redis.from_url(af.redis_url) as store:
            commands = store.info("commandstats")
    results = pd.read_sql("SELECT * FROM tiktok_audience_sync_results", warehouse).to_dict("records")
    warehouse.dispose()
    return CeleryConcurrencyRun(
        figures=figures,
        budget_reservations=sum(commands.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("eval", "evalsha")),
        results=results,
        logs=[*work.glob("worker-*.log"), *(work / "airflow" / "logs").rglob("*.log")],
    )


def test_concurrent_syncs_on_celery_find_the_broker_and_share_one_budget(postgres_server, tmp_path):
    """Issue 14 row 6 under a real scheduler: 3, then 6 syncs with the default max_qps on one token."""
    expected = seed_concurrent_entrants(postgres_server, CONCURRENT_SYNCS, MAPPING_REQUESTS)
    with SandboxProcess(tmp_path / "sandbox.db", latency_ms=250, valid_after_seconds=0) as sandbox:
        done = run_concurrent_syncs_on_celery(postgres_server, tmp_path, sandbox)
        for figures in done.figures:
            print(figures)
        for figures in done.figures:
            assert figures.all_at_once, figures
            assert figures.rate_limited == 0, figures
            assert figures.peak_per_second <= TIKTOK_MAX_QPS, figures
        assert done.budget_reservations >= MAPPING_REQUESTS * len(CONCURRENT_SYNCS), done.budget_reservations
        assert {r["audience_name"] for r in done.results} == set(expected)
        for row in done.results:
            users = expected[row["audience_name"]]
            assert (row["entered"], row["synced"], row["pending"], row["errored"]) == (len(users), len(users), 0, 0)
            assert set(sandbox.members(row["audience_id"])) == users, row["audience_name"]
    assert len([p for p in done.logs if "task_id=sync_" in str(p)]) == sum(CONCURRENT_SYNCS), done.logs
    assert not [p for p in done.logs if "Shared rate budget unavailable" in p.read_text()]
