"""Mirror mode end to end: the audience follows the warehouse through churn, identity changes, a kill and
an empty query, on SQLite and PostgreSQL, with real Airflow runs and the emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from dataclasses import replace

import pandas as pd
import pytest
import sqlalchemy

from demo.seed import generate_entrants
from tests.integration.harness import airflow_env, dags_test, expected_sync, results, start_dags_test, tasks_test
from tests.integration.operators.test_sync_operator import sync_task

DAYS = ["2026-11-08T00:00:00+00:00", "2026-11-09T00:00:00+00:00", "2026-11-10T00:00:00+00:00"]


def write_entrants(url: str, frame: pd.DataFrame) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        frame.to_sql("entrants", connection, index=False, if_exists="replace")
    engine.dispose()


def churn(frame: pd.DataFrame, truths: list, round_: int, every: int = 20) -> tuple[pd.DataFrame, list]:
    """One user in ``every`` leaves, as many join, and one in ``every`` changes email (all rows of a user alike)."""
    users = sorted(set(frame["user_id"]))
    leaving = set(users[round_::every])
    moving = set(users[round_ + 7 :: every]) - leaving
    kept_rows = [i for i, user in enumerate(frame["user_id"]) if user not in leaving]
    frame, truths = frame.iloc[kept_rows].reset_index(drop=True), [truths[i] for i in kept_rows]
    emails, new_truths = list(frame["email"]), []
    for i, (user, truth) in enumerate(zip(frame["user_id"], truths, strict=True)):
        if user in moving and truth.email:
            address = f"moved{round_}.{user}@example.org"
            emails[i], truth = address.upper(), replace(truth, email=address)
        new_truths.append(truth)
    frame = frame.assign(email=emails)
    joined, joined_truths = generate_entrants(len(users) // every, seed=100 + round_)
    joined = joined.assign(
        user_id=[f"r{round_}-{u}" for u in joined["user_id"]],
        email=[
            re.sub("user", f"joined{round_}-", e, flags=re.IGNORECASE) if isinstance(e, str) else e
            for e in joined["email"]
        ],
    )
    joined_truths = [
        replace(t, email=t.email.replace("user", f"joined{round_}-")) if t.email else t for t in joined_truths
    ]
    return pd.concat([frame, joined], ignore_index=True), new_truths + joined_truths


def latest_row(warehouse) -> dict:
    with sqlite3.connect(warehouse) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM tiktok_audience_sync_results ORDER BY rowid DESC LIMIT 1").fetchone())


def mirror_task(**overrides) -> dict:
    settings = {"action": "mirror", "min_audience_size": 100, "batch_size": 400}
    return sync_task("sync", "Mirrored", **(settings | overrides))


def members_equal_query(sandbox, row, frame, truths) -> None:
    expected = expected_sync(frame, truths)
    assert sorted(sandbox.members(row["audience_id"])) == sorted(expected["members"])
    assert row["entered"] == expected["entered"]
    assert row["synced"] + row["unchanged"] == expected["synced"]
    assert row["status"] == "finished" and row["pending"] == 0 and row["errored"] == 0


@pytest.mark.usefixtures("airflow_home")
def test_three_mirror_runs_with_churn_and_identity_changes_end_exact(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    frame, truths = generate_entrants(3_000, seed=21)
    write_entrants(f"sqlite:///{warehouse}", frame)
    env = airflow_env(sandbox, warehouse, {"dag_id": "mirror_runs", "tasks": [mirror_task()]})
    for round_, day in enumerate(DAYS):
        if round_:
            frame, truths = churn(frame, truths, round_)
            write_entrants(f"sqlite:///{warehouse}", frame)
        done = dags_test("mirror_runs", env, logical_date=day)
        assert done.returncode == 0, done.stdout[-4000:]
        row = latest_row(warehouse)
        members_equal_query(sandbox, row, frame, truths)
        if round_:
            assert 0 < row["removed"] < 0.1 * row["entered"] and row["unchanged"] > 0.8 * row["entered"]
            assert row["synced"] < 0.15 * row["entered"]  # only joiners and changed users were sent
            assert "Mirror plan: add" in done.stdout
        else:
            assert row["removed"] == 0 and row["unchanged"] == 0
    with sqlite3.connect(warehouse) as db:
        digests = db.execute("SELECT email FROM tiktok_audience_snapshot WHERE email IS NOT NULL LIMIT 5").fetchall()
    assert all(isinstance(d, bytes) and len(d) == 32 for (d,) in digests)  # binary digests, never hex or raw


@pytest.mark.usefixtures("airflow_home")
def test_a_kill_in_the_middle_of_the_second_run_then_a_retry_ends_exact(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=0, latency_ms=150)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = generate_entrants(3_000, seed=22)
    write_entrants(f"sqlite:///{warehouse}", frame)
    task = mirror_task(batch_size=40, max_qps=8, concurrency=2)
    env = airflow_env(sandbox, warehouse, {"dag_id": "mirror_kill", "tasks": [task]})
    assert dags_test("mirror_kill", env, logical_date=DAYS[0]).returncode == 0
    frame, truths = churn(frame, truths, 1)
    write_entrants(f"sqlite:///{warehouse}", frame)
    before = sum(sandbox.stats()["requests"].get("segment/mapping/", {}).values())
    second = start_dags_test("mirror_kill", env, logical_date=DAYS[1])
    while sum(sandbox.stats()["requests"].get("segment/mapping/", {}).values()) < before + 4:
        assert second.poll() is None, second.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait()
    with sqlite3.connect(warehouse) as db:
        run_id, phase = db.execute(
            "SELECT run_id, status FROM tiktok_audience_sync_ledger ORDER BY first_attempt_at DESC"
        ).fetchone()
    assert phase == "pending"  # the second run's plan was staged in full before the kill
    done = tasks_test("mirror_kill", "sync", run_id, env)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Resuming" in done.stdout
    row = latest_row(warehouse)
    assert row["run_id"] == run_id
    members_equal_query(sandbox, row, frame, truths)
    assert row["attempts"] == 2 and row["removed"] > 0


@pytest.mark.usefixtures("airflow_home")
def test_an_empty_query_is_refused_without_sending_and_dry_run_prints_the_plan(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    frame, truths = generate_entrants(1_500, seed=23)
    write_entrants(f"sqlite:///{warehouse}", frame)
    task = mirror_task(retries=2)
    env = airflow_env(sandbox, warehouse, {"dag_id": "mirror_guard", "tasks": [task]})
    assert dags_test("mirror_guard", env, logical_date=DAYS[0]).returncode == 0
    [first] = results(warehouse)
    write_entrants(f"sqlite:///{warehouse}", frame.iloc[:0])  # the upstream table was emptied by mistake

    dry = {"dag_id": "mirror_dry", "tasks": [mirror_task(dry_run=True, ledger_table="dry_ledger")]}
    done = dags_test("mirror_dry", airflow_env(sandbox, warehouse, dry), logical_date=DAYS[1])
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Mirror plan: add 0 new and 0 changed users, remove" in done.stdout
    assert "A real run would be refused" in done.stdout

    sent = sandbox.stats()["requests"].get("segment/mapping/", {})
    refused = dags_test("mirror_guard", env, logical_date=DAYS[1])
    assert refused.returncode != 0
    assert "removes 100% of the audience, more than max_removal_fraction=50%" in refused.stdout
    assert refused.stdout.count("Refusing the mirror plan") >= 1 and "up_for_retry" not in refused.stdout.lower()
    assert sandbox.stats()["requests"].get("segment/mapping/", {}) == sent  # nothing sent
    assert sorted(sandbox.members(first["audience_id"])) == sorted(expected_sync(frame, truths)["members"])


@pytest.mark.usefixtures("airflow_home")
def test_mirror_on_postgres_changes_only_the_connection(sandbox, postgres_server, tmp_path):
    url = "postgresql+psycopg2://{login}@{host}:{port}/{schema}".format(**postgres_server)
    frame, truths = generate_entrants(2_000, seed=24)
    write_entrants(url, frame)
    conn = json.dumps({"conn_type": "postgres", **postgres_server})
    spec = {"dag_id": "mirror_pg", "tasks": [mirror_task(sql="SELECT * FROM entrants ORDER BY user_id")]}
    env = airflow_env(sandbox, tmp_path / "unused.db", spec, AIRFLOW_CONN_WAREHOUSE=conn)
    for round_, day in enumerate(DAYS[:2]):
        if round_:
            frame, truths = churn(frame, truths, round_)
            write_entrants(url, frame)
        done = dags_test("mirror_pg", env, logical_date=day)
        assert done.returncode == 0, done.stdout[-4000:]
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        row = dict(
            connection.execute(sqlalchemy.text("SELECT * FROM tiktok_audience_sync_results ORDER BY updated_at DESC"))
            .mappings()
            .first()
        )
    engine.dispose()
    ordered = frame.sort_values("user_id", kind="stable")
    members_equal_query(sandbox, row, ordered, [truths[i] for i in ordered.index])
    assert row["removed"] > 0


@pytest.mark.usefixtures("airflow_home")
def test_a_query_keeping_too_few_users_is_refused_with_a_failed_row_and_its_dry_run_counts_the_plan(sandbox, tmp_path):
    """600 of 1,500 users stay (60 % would leave): the refusal fails the task without a retry and the row says
    failed counting nothing; the dry run of the same plan counts the stayers as unchanged, and writes nothing."""
    warehouse = tmp_path / "warehouse.db"
    frame, truths = generate_entrants(1_500, seed=29)
    write_entrants(f"sqlite:///{warehouse}", frame)
    env = airflow_env(sandbox, warehouse, {"dag_id": "mirror_shrunk", "tasks": [mirror_task(retries=2)]})
    assert dags_test("mirror_shrunk", env, logical_date=DAYS[0]).returncode == 0
    [first] = results(warehouse)
    write_entrants(f"sqlite:///{warehouse}", frame.iloc[:600])
    with sqlite3.connect(warehouse) as db:
        snapshot_rows = db.execute("SELECT COUNT(*) FROM tiktok_audience_snapshot").fetchone()

    dry = {"dag_id": "mirror_shrunk_dry", "tasks": [mirror_task(dry_run=True, ledger_table="dry_ledger")]}
    done = dags_test("mirror_shrunk_dry", airflow_env(sandbox, warehouse, dry), logical_date=DAYS[1])
    assert done.returncode == 0, done.stdout[-3000:]
    assert "A real run would be refused" in done.stdout
    dry_row = latest_row(warehouse)
    assert dry_row["status"] == "dry_run" and dry_row["unchanged"] > 0 and dry_row["entered"] == 600

    refused = dags_test("mirror_shrunk", env, logical_date=DAYS[1])
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Refusing the mirror plan" in output and "AssertionError" not in output
    assert "up_for_retry" not in output.lower()
    row = latest_row(warehouse)
    assert (row["status"], row["entered"], row["unchanged"], row["removed"]) == ("failed", 0, 0, 0)
    with sqlite3.connect(warehouse) as db:
        assert db.execute("SELECT COUNT(*) FROM tiktok_audience_snapshot").fetchone() == snapshot_rows
    assert sorted(sandbox.members(first["audience_id"])) == sorted(expected_sync(frame, truths)["members"])
