"""SyncAudienceOperator as a real Airflow task (``airflow dags test``) against the emulator and SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy

from airflow_provider_tiktok.lineage import audience_asset_uri
from demo.seed import generate_entrants
from tests.integration.harness import airflow_env, dags_test, expected_sync, results, start_dags_test, xcom_return

MATCH = {"email": "email", "phone": "phone", "idfa": "idfa", "gaid": "gaid"}


def seed_warehouse(path, count: int, seed: int = 11):
    frame, truths = generate_entrants(count, seed)
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        frame.to_sql("entrants", connection, index=False)
    engine.dispose()
    return frame, truths


def sync_task(task_id: str, audience: str, **overrides) -> dict:
    return {
        "task_id": task_id,
        "audience_name": audience,
        "sql": "SELECT * FROM entrants ORDER BY rowid",
        "warehouse_conn_id": "warehouse",
        "match_fields": MATCH,
        "default_phone_country": "US",
        "chunk_size": 4000,
        "batch_size": 2500,
        **overrides,
    }


def assert_exact(sandbox, warehouse, dag_id, task_id, expected, row_count: int = 1):
    [row] = [r for r in results(warehouse) if r["dag_id"] == dag_id and r["task_id"] == task_id]
    xcom = xcom_return(dag_id, task_id)
    members = sandbox.members(row["audience_id"])
    assert sorted(members) == sorted(expected["members"])  # every expected digest, each once
    for metrics in (row, xcom):
        assert metrics["entered"] == expected["entered"]
        assert metrics["synced"] == expected["synced"]
        assert metrics["pending"] == 0 and metrics["errored"] in (0, {})
    assert json.loads(row["not_synced_by_reason"]) == expected["not_synced"]
    assert xcom["not_synced"] == expected["not_synced"]
    assert row["status"] == "finished"
    return row, xcom


@pytest.mark.usefixtures("airflow_home")
def test_25000_users_from_sqlite_land_exactly_once(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 25_000)
    # Two preparation threads here (the other tests use the default one): the result must be the same.
    task = sync_task("sync", "Winback 25k", prepare_workers=2, rejects_table="tiktok_rejects")
    spec = {"dag_id": "sync_25k", "tasks": [task]}
    done = dags_test("sync_25k", airflow_env(sandbox, warehouse, spec))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    expected = expected_sync(frame, truths)
    row, xcom = assert_exact(sandbox, warehouse, "sync_25k", "sync", expected)
    assert expected["not_synced"]["duplicate"] > 0 and expected["not_synced"]["invalid_email"] > 0
    stats = sandbox.stats()
    assert stats["requests"]["segment/mapping/"] == {"0": -(-expected["synced"] // 2500)}
    assert stats["audiences"][row["audience_id"]]["received"] == expected["synced"]
    assert xcom["requests"] == row["requests"] and row["attempts"] == 1
    assert all(email not in done.stdout + done.stderr for email in frame["email"].dropna().head(200) if email.strip())
    # Per-user outcomes: one reject row per user not synced, by key and reason, never an identifier.
    with sqlite3.connect(warehouse) as db:
        rejects = db.execute("SELECT reason, COUNT(*) FROM tiktok_rejects GROUP BY reason").fetchall()
        keys = {k for (k,) in db.execute("SELECT user_key FROM tiktok_rejects WHERE user_key IS NOT NULL")}
    assert dict(rejects) == expected["not_synced"]
    assert keys <= {str(k) for k in frame["user_id"].dropna()}
    # Coverage: how many synced users carried each identifier; phases and time to first request reported.
    coverage = json.loads(row["coverage"])
    assert set(coverage) == {"email", "phone", "idfa", "gaid"}
    assert all(0 < users <= expected["synced"] for users in coverage.values()) and xcom["coverage"] == coverage
    assert row["time_to_first_request_seconds"] is not None and row["upload_seconds"] > 0
    assert row["report_seconds"] is not None  # every phase is in the row, the report included
    assert "read=" in done.stdout and "upload=" in done.stdout and "report=" in done.stdout
    # "Audience refreshed": an asset event by name and by id, with the counts and nothing else.
    with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as db:
        events = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_dag_id = ?",
            ("sync_25k",),
        ).fetchall()
    advertiser = row["advertiser_id"]
    by_name, by_id = audience_asset_uri(advertiser, "Winback 25k"), audience_asset_uri(advertiser, row["audience_id"])
    assert {uri for uri, _ in events} == {by_name, by_id}
    extras = [json.loads(extra) if isinstance(extra, str) else extra for _, extra in events]
    assert all(e["synced"] == expected["synced"] and e["entered"] == expected["entered"] for e in extras)


@pytest.mark.usefixtures("airflow_home")
def test_rate_limit_period_and_transient_errors_reach_the_same_end_state(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=0, transient_error_rate=0.10, seed=5)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 8_000)
    spec = {"dag_id": "sync_faults", "tasks": [sync_task("sync", "Faulty", batch_size=100)]}
    run = start_dags_test("sync_faults", airflow_env(sandbox, warehouse, spec))
    while "segment/mapping/" not in sandbox.stats()["requests"] and run.poll() is None:
        time.sleep(0.05)
    sandbox.set_faults(rate_limit_for_seconds=2.0)  # mid-upload, as a real outage would be
    output = run.communicate(timeout=600)[0]
    done = subprocess.CompletedProcess(run.args, run.returncode, output, "")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    row, _ = assert_exact(sandbox, warehouse, "sync_faults", "sync", expected_sync(frame, truths))
    stats = sandbox.stats()
    codes = {code for endpoint in stats["requests"].values() for code in endpoint}
    assert {"40100", "50000", "503"} <= codes, stats["requests"]
    assert row["retries"] > 0 and row["rate_limited"] > 0


@pytest.mark.usefixtures("airflow_home")
def test_two_concurrent_tasks_share_the_budget_and_create_one_audience(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 20_000)
    processes = []
    for dag_id in ("sync_left", "sync_right"):
        spec = {"dag_id": dag_id, "tasks": [sync_task("sync", "Shared audience", batch_size=200, max_qps=25)]}
        processes.append(start_dags_test(dag_id, airflow_env(sandbox, warehouse, spec)))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    stats = sandbox.stats()
    assert "40100" not in {code for endpoint in stats["requests"].values() for code in endpoint}
    assert stats["peak_requests_per_second"] <= 50
    audiences = [a for a in stats["audiences"].values() if a["name"] == "Shared audience"]
    assert len(audiences) == 1
    expected = expected_sync(frame, truths)
    rows = results(warehouse)
    assert len({r["audience_id"] for r in rows}) == 1
    assert sorted(sandbox.members(rows[0]["audience_id"])) == sorted(expected["members"])


@pytest.mark.usefixtures("airflow_home")
def test_dry_run_counts_without_creating_or_sending(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 3_000)
    spec = {"dag_id": "sync_dry", "tasks": [sync_task("sync", "Never created", dry_run=True)]}
    done = dags_test("sync_dry", airflow_env(sandbox, warehouse, spec))
    assert done.returncode == 0, done.stdout[-4000:]
    expected = expected_sync(frame, truths)
    [row] = results(warehouse)
    assert (row["status"], row["entered"], row["pending"], row["synced"]) == ("dry_run", 3000, expected["synced"], 0)
    assert sandbox.stats()["audiences"] == {}
    assert "segment/mapping/" not in sandbox.stats()["requests"]


@pytest.mark.usefixtures("airflow_home")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"match_fields": {"phone": "phone_number"}}, "no column(s) ['phone_number']"),
        ({"match_fields": {}}, "match_fields is empty"),
        ({"audience_name": None}, "Name the audience"),
        ({"sql": "SELECT * FROM nowhere"}, "Could not read the source query"),
    ],
)
def test_launch_validation_refuses_with_one_clear_message_and_sends_nothing(sandbox, tmp_path, override, message):
    warehouse = tmp_path / "warehouse.db"
    seed_warehouse(warehouse, 100)
    spec = {"dag_id": "sync_invalid", "tasks": [sync_task("sync", "Invalid", **override)]}
    done = dags_test("sync_invalid", airflow_env(sandbox, warehouse, spec))
    assert done.returncode != 0
    assert message in done.stdout + done.stderr
    assert "Traceback" not in _task_error_section(done.stdout + done.stderr, message)
    assert sandbox.stats()["audiences"] == {}


def _task_error_section(output: str, message: str) -> str:
    position = output.find(message)
    return output[max(0, position - 300) : position]


@pytest.mark.usefixtures("airflow_home")
def test_a_source_that_fails_mid_read_leaves_a_failed_row_counting_nothing_and_the_retry_starts_afresh(
    sandbox, tmp_path
):
    """SQLite raises on row 36,001 (after nine chunks, batches staged); the row is failed with zero
    counts (how many entered is unknown) and the task is left to Airflow's retry, not an invariant error."""
    warehouse = tmp_path / "warehouse.db"
    seed_warehouse(warehouse, 40_000)
    failing = "SELECT * FROM entrants WHERE json(CASE WHEN rowid > 36000 THEN 'x' ELSE '1' END) ORDER BY rowid"
    spec = {"dag_id": "sync_mid_read", "tasks": [sync_task("sync", "Mid read", sql=failing, batch_size=1000)]}
    done = dags_test("sync_mid_read", airflow_env(sandbox, warehouse, spec))
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Reading the source failed after its first chunk" in output
    assert "AssertionError" not in output
    [row] = results(warehouse)
    assert (row["status"], row["entered"], row["synced"], row["pending"]) == ("failed", 0, 0, 0)
    with sqlite3.connect(warehouse) as db:
        [(status,)] = db.execute("SELECT status FROM tiktok_audience_sync_ledger").fetchall()
    assert status == "staging"  # a retry starts afresh
