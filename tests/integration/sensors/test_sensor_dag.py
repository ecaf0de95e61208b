"""The deferrable sensor waits inside a real dag.test() run for the emulator's audience to become valid."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import airflow_env, dags_test, results, xcom_return
from tests.integration.operators.test_sync_operator import seed_warehouse, sync_task


@pytest.mark.usefixtures("airflow_home")
def test_deferred_sensor_waits_until_the_new_audience_is_valid(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=25)
    warehouse = tmp_path / "warehouse.db"
    seed_warehouse(warehouse, 1_500)
    spec = {
        "dag_id": "sync_then_wait",
        "tasks": [
            sync_task("sync", "Waited for"),
            {
                "kind": "sensor",
                "task_id": "wait",
                "audience_name": "Waited for",
                "deferrable": True,
                "poke_interval": 2,
                "timeout": 180,
            },
        ],
    }
    started = time.monotonic()
    done = dags_test("sync_then_wait", airflow_env(sandbox, warehouse, spec))
    assert done.returncode == 0, done.stdout[-4000:]
    assert "deferred" in done.stdout.lower()
    [row] = results(warehouse)
    details = xcom_return("sync_then_wait", "wait")
    assert details["is_valid"] is True and details["size"] == row["synced"]
    assert details["audience_id"] == row["audience_id"]
    created = sandbox.stats()["audiences"][row["audience_id"]]
    assert created["name"] == "Waited for"
    assert time.monotonic() - started >= 25  # it really waited for validity


@pytest.mark.usefixtures("airflow_home")
def test_wrong_name_fails_clearly_long_before_the_timeout(sandbox, tmp_path):
    spec = {
        "dag_id": "wait_for_nothing",
        "tasks": [
            {
                "kind": "sensor",
                "task_id": "wait",
                "audience_name": "No such audience",
                "deferrable": True,
                "fail_if_missing": True,
                "poke_interval": 1,
                "timeout": 600,
            }
        ],
    }
    started = time.monotonic()
    done = dags_test("wait_for_nothing", airflow_env(sandbox, tmp_path / "unused.db", spec))
    assert done.returncode != 0
    assert "audience 'No such audience' does not exist" in done.stdout
    assert time.monotonic() - started < 120
