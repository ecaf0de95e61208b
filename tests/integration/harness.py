"""Run real Airflow (``airflow dags test``) against the emulator and a SQLite warehouse."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
LOGICAL_DATE = "2026-11-08T00:00:00+00:00"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def warehouse_conn(path: Path) -> str:
    return json.dumps({"conn_type": "sqlite", "host": str(path)})


def airflow_env(sandbox, warehouse: Path, spec: dict | None = None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_WAREHOUSE": warehouse_conn(warehouse),
        **extra,
    }
    if spec is not None:
        env["TIKTOK_TEST_SPEC"] = json.dumps(spec)
    return env


def dags_test(dag_id: str, env: dict[str, str], *, timeout: float = 600, logical_date: str = LOGICAL_DATE):
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, logical_date], env=env, capture_output=True, text=True, timeout=timeout
    )


def tasks_test(dag_id: str, task_id: str, run_id: str, env: dict[str, str], *, timeout: float = 600):
    """Run one task instance of an existing run again: what Airflow does when it retries a killed worker."""
    return subprocess.run(
        [AIRFLOW, "tasks", "test", dag_id, task_id, run_id], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_dags_test(dag_id: str, env: dict[str, str], *, logical_date: str = LOGICAL_DATE) -> subprocess.Popen:
    return subprocess.Popen(
        [AIRFLOW, "dags", "test", dag_id, logical_date],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def results(warehouse: Path, table: str = "tiktok_audience_sync_results") -> list[dict]:
    with sqlite3.connect(warehouse) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY task_id, map_index")]


def xcom_return(dag_id: str, task_id: str) -> dict:
    database = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value'", (dag_id, task_id)
        ).fetchall()
    assert len(rows) == 1, f"expected one return value, found {len(rows)}"
    value = rows[0][0]
    return json.loads(value) if isinstance(value, str | bytes) else value


def expected_sync(frame, truths, fields: Sequence[str] = ("email", "phone", "idfa", "gaid")):
    """Spec-level outcome of a sync, from the seeder's ground truth (not the provider's normaliser).

    A user is usable when any chosen field is valid; usable repeats of a user key are duplicates;
    an unusable user is ``missing_fields`` when nothing was present, otherwise the first invalid
    field in id_schema order names the reason. Emulator members are each user's first digest.
    """
    order = [f for f in ("email", "phone", "idfa", "gaid") if f in fields]
    seen: set[str] = set()
    members: set[str] = set()
    not_synced: Counter[str] = Counter()
    for user_id, truth in zip(frame["user_id"], truths, strict=True):
        valid = [getattr(truth, f) for f in order]
        if not any(valid):
            present = [f for f in order if getattr(truth, f"{f}_present")]
            reason = (
                "missing_fields"
                if not present
                else ("invalid_device_id" if present[0] in ("idfa", "gaid") else f"invalid_{present[0]}")
            )
            not_synced[reason] += 1
            continue
        if user_id in seen:
            not_synced["duplicate"] += 1
            continue
        seen.add(user_id)
        members.add(sha256(next(v for v in valid if v)))
    return {"entered": len(frame), "synced": len(seen), "not_synced": dict(not_synced), "members": members}


class PostgresMissing(RuntimeError):
    pass


@contextmanager
def postgres_server_running() -> Iterator[dict]:
    """A real PostgreSQL server from the system package on a free loopback port, with a ``warehouse``
    database; yields its connection fields, and removes it afterwards."""
    import glob
    import shutil
    import tempfile

    from airflow_provider_tiktok.sandbox.process import free_port

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bin_dir = Path(binaries[-1]) if binaries else Path(shutil.which("initdb") or "initdb").parent
    if not (bin_dir / "initdb").exists():
        raise PostgresMissing("PostgreSQL server is not installed: run `make test`, which installs it.")
    data = Path(tempfile.mkdtemp(prefix="tiktok-pg-", dir="/tmp"))
    data.chmod(0o755)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], capture_output=True, text=True, check=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "airflow", "--auth=trust")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "server.log"), "-o", options, "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "warehouse")
        yield {"host": "127.0.0.1", "port": port, "login": "airflow", "schema": "warehouse"}
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop")
        shutil.rmtree(data, ignore_errors=True)
