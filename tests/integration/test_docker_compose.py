"""docker-compose.yaml is valid Compose and has the full Airflow stack (no Docker engine needed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_validates_and_describes_the_whole_stack():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: `make test` installs it (scripts/ensure-test-services.sh)"
    done = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yaml"), "config"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
        "tiktok-emulator",
    } <= set(services)
    worker_env = services["airflow-worker"]["environment"]
    assert worker_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker_env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    tiktok = json.loads(worker_env["AIRFLOW_CONN_TIKTOK_DEFAULT"])
    assert tiktok["host"].startswith("http://127.0.0.1:")  # loopback only, so the emulator shares the netns
    assert services["tiktok-emulator"]["network_mode"] == "service:airflow-worker"
    assert services["airflow-triggerer"]["network_mode"] == "service:airflow-worker"
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow pools set tiktok_api" in init and "db migrate" in init
    assert any("/opt/airflow/dags" in str(volume) for volume in services["airflow-worker"]["volumes"])
