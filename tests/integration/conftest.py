"""Integration fixtures: one migrated Airflow metadata DB per session, and a dags folder with the spec DAG."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import AIRFLOW, PostgresMissing, postgres_server_running

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
    try:
        with postgres_server_running() as server:
            yield server
    except PostgresMissing as missing:
        pytest.fail(str(missing))
