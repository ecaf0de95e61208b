"""Resuming across attempts: kill-safe, frozen user set, fatal errors, and the retry window."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from tests.integration.harness import airflow_env, dags_test, expected_sync, results, start_dags_test, tasks_test
from tests.integration.operators.test_sync_operator import seed_warehouse, sync_task


def mapping_requests(sandbox) -> int:
    return sum(sandbox.stats()["requests"].get("segment/mapping/", {}).values())


@pytest.mark.usefixtures("airflow_home")
def test_killed_mid_run_then_retried_resumes_the_original_users_exactly_once(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=0, latency_ms=150)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 12_000)
    expected = expected_sync(frame, truths)
    batches = -(-expected["synced"] // 200)
    task = sync_task("sync", "Resumable", batch_size=200, max_qps=8, concurrency=2)
    env = airflow_env(sandbox, warehouse, {"dag_id": "sync_kill", "tasks": [task]})

    first = start_dags_test("sync_kill", env)
    while mapping_requests(sandbox) < batches // 2:
        assert first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the worker dies mid-batch, no cleanup
    first.wait()
    sent_before = mapping_requests(sandbox)

    with sqlite3.connect(warehouse) as db:  # the source changes before the retry
        db.execute("DELETE FROM entrants WHERE rowid % 2 = 0")
        db.execute("UPDATE entrants SET email = 'new.' || email WHERE email IS NOT NULL")

    with sqlite3.connect(warehouse) as db:
        [(run_id, phase)] = db.execute("SELECT run_id, status FROM tiktok_audience_sync_ledger").fetchall()
    assert phase == "pending"  # every user staged (0.1 called this phase "staged")
    done = tasks_test("sync_kill", "sync", run_id, env)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Resuming" in done.stdout
    [row] = results(warehouse)
    members = sandbox.members(row["audience_id"])
    assert sorted(members) == sorted(expected["members"])  # the frozen set, each digest once
    assert (row["entered"], row["synced"], row["pending"], row["errored"]) == (
        expected["entered"],
        expected["synced"],
        0,
        0,
    )
    assert json.loads(row["not_synced_by_reason"]) == expected["not_synced"]
    sent_by_retry = mapping_requests(sandbox) - sent_before
    remaining = batches - sent_before
    assert remaining <= sent_by_retry <= remaining + 2  # in-flight batches may be resent, nothing more
    assert row["attempts"] == 2  # the killed attempt counts too


@pytest.mark.usefixtures("airflow_home")
def test_revoked_token_fails_fast_and_errors_pending_users_with_the_reason(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=0, latency_ms=100)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 6_000)
    expected = expected_sync(frame, truths)
    task = sync_task("sync", "Revoked", batch_size=100, max_qps=10, concurrency=2, retries=5, retry_delay=1)
    run = start_dags_test("sync_revoke", airflow_env(sandbox, warehouse, {"dag_id": "sync_revoke", "tasks": [task]}))
    while mapping_requests(sandbox) < 5:
        time.sleep(0.05)
    sandbox.revoke()
    started = time.monotonic()
    output = run.communicate(timeout=300)[0]
    assert run.returncode != 0
    assert time.monotonic() - started < 60
    assert "python -m airflow_provider_tiktok.oauth" in output
    [row] = results(warehouse)
    errored = json.loads(row["errored_by_reason"])
    assert row["status"] == "failed" and row["pending"] == 0 and row["attempts"] == 1
    assert set(errored) == {"api_error_40105"}
    assert row["synced"] + row["errored"] == expected["synced"]
    revoked_answers = sum(e.get("40105", 0) for e in sandbox.stats()["requests"].values())
    assert revoked_answers <= 4  # the requests in flight, then nothing: no retry storm


@pytest.mark.usefixtures("airflow_home")
def test_attempt_after_the_window_errors_pending_users_and_fails(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=0)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 3_000)
    expected = expected_sync(frame, truths)
    sandbox.set_faults(rate_limit_for_seconds=600)  # a long outage, as far as this test is concerned
    task = sync_task(
        "sync",
        "Outage",
        batch_size=500,
        retries=8,
        retry_delay=2,
        retry_window=12,  # long enough for a retry to meet the outage (the first attempt may spend it creating)
        attempt_budget=1,
        request_retry_limit=2,
        request_retry_seconds=1,
        max_qps=1,  # one batch a second, so the outage starts while users are still staged
        concurrency=1,
    )
    # Launch validation needs the API: let the first calls through, then start the outage.
    sandbox.set_faults(rate_limit_for_seconds=0)
    run = start_dags_test("sync_window", airflow_env(sandbox, warehouse, {"dag_id": "sync_window", "tasks": [task]}))
    while "segment/mapping/" not in sandbox.stats()["requests"]:
        time.sleep(0.02)
    sandbox.set_faults(rate_limit_for_seconds=600)
    output = run.communicate(timeout=300)[0]
    assert run.returncode != 0
    assert "Retry window" in output
    [row] = results(warehouse)
    # Staging feeds the upload as it goes, so a first batch or two may be acknowledged before the outage.
    assert row["status"] == "failed" and row["pending"] == 0 and row["errored"] > 0
    assert json.loads(row["errored_by_reason"]) == {"api_error_40100": row["errored"]}
    assert row["synced"] + row["errored"] == expected["synced"]
    assert row["entered"] == expected["entered"] and row["attempts"] >= 2


@pytest.mark.usefixtures("airflow_home")
def test_clearing_a_finished_sync_runs_it_fresh(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    seed_warehouse(warehouse, 2_000)
    env = airflow_env(sandbox, warehouse, {"dag_id": "sync_again", "tasks": [sync_task("sync", "Again")]})
    assert dags_test("sync_again", env).returncode == 0
    [first] = results(warehouse)
    with sqlite3.connect(warehouse) as db:
        [(run_id, phase)] = db.execute("SELECT run_id, status FROM tiktok_audience_sync_ledger").fetchall()
    assert phase == "finished"
    with sqlite3.connect(warehouse) as db:  # new entrants arrive before the clear
        db.execute("INSERT INTO entrants (user_id, email) VALUES ('late-1', 'late.one@example.com')")
    cleared = tasks_test("sync_again", "sync", run_id, env)  # the same run again, as a UI clear does
    assert cleared.returncode == 0, cleared.stdout[-3000:]
    assert "starting a fresh sync" in cleared.stdout
    [second] = results(warehouse)  # the same row, replaced: nothing summed across the two
    assert (second["run_id"], second["attempts"]) == (run_id, 1)
    assert second["entered"] == first["entered"] + 1 and second["synced"] == first["synced"] + 1
    audience = sandbox.stats()["audiences"][second["audience_id"]]
    assert audience["members"] == second["synced"]
