"""Integration fixtures: one migrated Airflow metadata DB per session, and a dags folder with the spec DAG."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import AIRFLOW

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    home = Path(os.environ["AIRFLOW_HOME"])
    dags = home / "dags"
    dags.mkdir(exist_ok=True)
    shutil.copy(HERE / "spec_dag.py", dags / "spec_dag.py")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    done = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture(scope="session")
def example_dags(airflow_home) -> Path:
    """The repository's example DAGs (and their config) in the session's dags folder."""
    dags = airflow_home / "dags"
    for source in (HERE.parent.parent / "dags").iterdir():
        if source.suffix in (".py", ".yaml"):
            shutil.copy(source, dags / source.name)
    return dags


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server from the system package, on a free loopback port, for this session."""
    import glob
    import tempfile

    from airflow_provider_tiktok.sandbox.process import free_port

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bin_dir = Path(binaries[-1]) if binaries else Path(shutil.which("initdb") or "initdb").parent
    if not (bin_dir / "initdb").exists():
        pytest.fail("PostgreSQL server is not installed: run `make test`, which installs it.")
    data = Path(tempfile.mkdtemp(prefix="tiktok-pg-", dir="/tmp"))
    data.chmod(0o755)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], capture_output=True, text=True, check=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "airflow", "--auth=trust")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data / "db"),
        "-w",
        "-l",
        str(data / "server.log"),
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
        "start",
    )
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "warehouse")
        yield {"host": "127.0.0.1", "port": port, "login": "airflow", "schema": "warehouse"}
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop")
        shutil.rmtree(data, ignore_errors=True)
