"""The example DAGs: they import cleanly and fast, and the main one syncs exactly on SQLite and Postgres."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy

from demo.seed import generate_entrants, seed
from tests.integration.harness import dags_test, expected_sync

DAGS = Path(__file__).resolve().parents[3] / "dags"
MAIN = "tiktok_canvas_audience_sync"
LOGICAL_DATE = "2026-11-02T00:00:00+00:00"  # data interval: 2026-11-01
STEPS = {
    "Winback - step 1": ("winback", "step_1"),
    "Winback - step 2": ("winback", "step_2"),
    "Onboarding - new users": ("onboarding", "step_1"),
    "Loyalty - VIP lookalike seed": ("loyalty", "vip"),
}


def test_every_dag_file_imports_without_errors_and_quickly():
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert {MAIN, "tiktok_loyalty_suppression"} <= set(bag.dag_ids)
    assert time.monotonic() - started < 30


def test_dag_files_make_no_network_or_database_calls_at_parse_time():
    code = (
        "import socket, sqlite3, runpy, sys\n"
        "def refuse(*a, **k): raise AssertionError('network or database call at parse time')\n"
        "socket.socket.connect = refuse\nsqlite3.connect = refuse\n"
        f"for name in {[p.name for p in DAGS.glob('*.py')]!r}:\n"
        f"    runpy.run_path({str(DAGS)!r} + '/' + name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def run_main_dag(sandbox, warehouse_conn: dict, read_results, env_extra: dict | None = None):
    import os

    env = {
        **os.environ,
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps(warehouse_conn),
        **(env_extra or {}),
    }
    done = dags_test(MAIN, env, logical_date=LOGICAL_DATE)
    assert done.returncode == 0, done.stdout[-5000:]
    return read_results()


def assert_exact_per_step(sandbox, rows: list[dict], count: int):
    frame, truths = generate_entrants(count, 7, days=1)  # timestamps differ by run; order and values do not
    assert {r["audience_name"] for r in rows} == set(STEPS)
    for row in rows:
        canvas, step = STEPS[row["audience_name"]]
        chosen = (frame.canvas_id == canvas) & (frame.step_id == step)
        order = frame[chosen].sort_values(["entered_at", "user_id"], kind="stable").index
        expected = expected_sync(frame.loc[order], [truths[i] for i in order])
        assert (row["entered"], row["synced"], row["pending"], row["errored"]) == (
            expected["entered"],
            expected["synced"],
            0,
            0,
        )
        assert json.loads(row["not_synced_by_reason"]) == expected["not_synced"]
        assert sorted(sandbox.members(row["audience_id"])) == sorted(expected["members"])


@pytest.mark.usefixtures("example_dags")
def test_main_dag_on_sqlite_is_exact_and_a_second_run_adds_nothing(start_sandbox, tmp_path):
    sandbox = start_sandbox(valid_after_seconds=2)
    warehouse = tmp_path / "warehouse.db"
    seed(f"sqlite:///{warehouse}", 12_000, days=1)
    conn = {"conn_type": "sqlite", "host": str(warehouse)}

    def read():
        engine = sqlalchemy.create_engine(f"sqlite:///{warehouse}")
        rows = pd.read_sql("SELECT * FROM tiktok_audience_sync_results", engine).to_dict("records")
        engine.dispose()
        return rows

    rows = run_main_dag(sandbox, conn, read)
    assert_exact_per_step(sandbox, rows, 12_000)
    sizes = {a["name"]: a["members"] for a in sandbox.stats()["audiences"].values()}

    again = run_main_dag(sandbox, conn, read)
    second_run = [r for r in again if r["run_id"] != rows[0]["run_id"]]
    assert len(sandbox.stats()["audiences"]) == 4  # no new audiences
    assert {a["name"]: a["members"] for a in sandbox.stats()["audiences"].values()} == sizes
    assert sorted((r["audience_name"], r["synced"]) for r in second_run) == sorted(
        (r["audience_name"], r["synced"]) for r in rows
    )  # each run reports its own interval once; nothing is summed across runs


@pytest.mark.usefixtures("example_dags")
def test_main_dag_on_postgres_changes_only_the_connection(start_sandbox, postgres_server):
    sandbox = start_sandbox(valid_after_seconds=2)
    url = "postgresql+psycopg2://{login}@{host}:{port}/{schema}".format(**postgres_server)
    seed(url, 12_000, days=1)
    conn = {"conn_type": "postgres", **postgres_server}

    def read():
        engine = sqlalchemy.create_engine(url)
        rows = pd.read_sql("SELECT * FROM tiktok_audience_sync_results", engine).to_dict("records")
        engine.dispose()
        return rows

    rows = run_main_dag(sandbox, conn, read)
    assert_exact_per_step(sandbox, rows, 12_000)
    engine = sqlalchemy.create_engine(url)
    staged = pd.read_sql("SELECT COUNT(*) AS n FROM tiktok_audience_sync_ledger_batches", engine)["n"][0]
    engine.dispose()
    assert staged >= 4  # the ledger lives in Postgres too


@pytest.mark.usefixtures("example_dags")
def test_suppression_dag_mirrors_loyal_members_adding_and_removing(start_sandbox, tmp_path):
    import os
    import sqlite3

    from demo.seed import loyalty_members

    sandbox = start_sandbox(valid_after_seconds=0)
    warehouse = tmp_path / "warehouse.db"
    seed(f"sqlite:///{warehouse}", 8_000, days=1)
    frame, truths = generate_entrants(8_000, 7, days=1)
    members = loyalty_members(frame)
    env = {
        **os.environ,
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }

    def expected(rows):
        return expected_sync(frame.loc[rows.index], [truths[i] for i in rows.index])["members"]

    with sqlite3.connect(warehouse) as db:  # first everyone is loyal
        db.execute("UPDATE loyalty_members SET status = 'active'")
    assert dags_test("tiktok_loyalty_suppression", env).returncode == 0
    [audience] = list(sandbox.stats()["audiences"])
    assert sorted(sandbox.members(audience)) == sorted(expected(members))

    lapsed = members[members.status == "lapsed"]
    assert len(lapsed) > 0
    with sqlite3.connect(warehouse) as db:  # then some lapse
        db.executemany("UPDATE loyalty_members SET status = 'lapsed' WHERE user_id = ?", [(u,) for u in lapsed.user_id])
    done = dags_test("tiktok_loyalty_suppression", env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert sorted(sandbox.members(audience)) == sorted(expected(members[members.status == "active"]))


@pytest.mark.usefixtures("example_dags")
def test_five_minute_dag_syncs_its_interval_and_records_freshness(start_sandbox, tmp_path):
    import os
    from datetime import datetime, timedelta, timezone

    sandbox = start_sandbox(valid_after_seconds=0)
    warehouse = tmp_path / "warehouse.db"
    run_after = datetime.now(tz=timezone.utc).replace(microsecond=0)
    start = run_after - timedelta(minutes=5)
    frame, truths = generate_entrants(3_000, 9, days=1, start=start - timedelta(minutes=5))
    step = (frame.canvas_id == "winback") & (frame.step_id == "step_1")
    spread = pd.Series([start + timedelta(seconds=(i * 7) % 300) for i in range(len(frame))])
    frame["entered_at"] = spread.where(step, start - timedelta(hours=1)).map(lambda t: t.isoformat())
    engine = sqlalchemy.create_engine(f"sqlite:///{warehouse}")
    frame.to_sql("canvas_step_entrants", engine, index=False)
    engine.dispose()
    env = {
        **os.environ,
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }
    done = dags_test("tiktok_journey_step_every_5_minutes", env, logical_date=run_after.isoformat())
    assert done.returncode == 0, done.stdout[-3000:]
    engine = sqlalchemy.create_engine(f"sqlite:///{warehouse}")
    [row] = pd.read_sql("SELECT * FROM tiktok_audience_sync_results", engine).to_dict("records")
    engine.dispose()
    in_interval = frame[step].sort_values(["entered_at", "user_id"], kind="stable")
    expected = expected_sync(in_interval, [truths[i] for i in in_interval.index])
    assert (row["entered"], row["synced"]) == (expected["entered"], expected["synced"]) and row["entered"] > 0
    assert sorted(sandbox.members(row["audience_id"])) == sorted(expected["members"])
    # Entered within the last 5 minutes, acknowledged now: lags between the run's age and 5 minutes + the run.
    elapsed = (datetime.now(tz=timezone.utc) - start).total_seconds()
    assert 0 < row["lag_p50_seconds"] <= row["lag_p95_seconds"] <= 1.1 * row["lag_max_seconds"]
    assert row["lag_max_seconds"] <= elapsed + 1
    print(
        f"5-minute DAG freshness: p50 {row['lag_p50_seconds']} s, p95 {row['lag_p95_seconds']} s, "
        f"max {row['lag_max_seconds']} s for {row['synced']} users"
    )
