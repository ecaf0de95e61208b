"""Every test session gets its own AIRFLOW_HOME, set before Airflow is imported."""

from __future__ import annotations

import os
import tempfile

_home = tempfile.mkdtemp(prefix="tiktok-airflow-home-")
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_home}/airflow.db")


import pytest  # noqa: E402

from airflow_provider_tiktok.sandbox.process import SandboxProcess  # noqa: E402


@pytest.fixture
def start_sandbox(tmp_path):
    """Factory: ``start_sandbox(latency_ms=250, ...)`` runs the real emulator on a free loopback port."""
    started: list[SandboxProcess] = []

    def start(**options) -> SandboxProcess:
        state = options.pop("state_path", tmp_path / f"sandbox-{len(started)}.db")
        sandbox = SandboxProcess(state, **options).start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(start_sandbox):
    """A fresh emulator whose new audiences are valid at once."""
    return start_sandbox(valid_after_seconds=0)
