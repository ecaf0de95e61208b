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
