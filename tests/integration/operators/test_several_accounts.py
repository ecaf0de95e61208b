"""SyncAudienceOperator(advertiser_ids=[...]) as a real Airflow task against the emulator and SQLite: several ad
accounts in one sync, on the Segment API (one request reaches every account) and on customer files (sharing)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from tests.integration.harness import airflow_env, dags_test, expected_sync, results, start_dags_test, tasks_test
from tests.integration.operators.test_sync_operator import seed_warehouse, sync_task

FIRST, SECOND = "7000000000001", "7000000000002"
ACCOUNTS = [FIRST, SECOND]


def mapping_requests(sandbox) -> int:
    return sum(sandbox.stats()["requests"].get("segment/mapping/", {}).values())


def audiences_named(sandbox, name: str) -> dict[str, list[str]]:
    """Advertiser -> ids of the audiences of that name it owns."""
    owned: dict[str, list[str]] = {}
    for audience_id, audience in sandbox.stats()["audiences"].items():
        if audience["name"] == name:
            owned.setdefault(sandbox.audience(audience_id)["advertiser_id"], []).append(audience_id)
    return owned


def row_of(warehouse, dag_id: str) -> dict:
    [row] = [r for r in results(warehouse) if r["dag_id"] == dag_id]
    return row


@pytest.mark.usefixtures("airflow_home")
def test_two_accounts_get_exact_audiences_for_the_requests_of_one(start_sandbox, tmp_path):
    sandbox = start_sandbox(advertiser_ids=ACCOUNTS, valid_after_seconds=0)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 6_000)
    expected = expected_sync(frame, truths)

    one = {"dag_id": "sync_one_account", "tasks": [sync_task("sync", "One account", advertiser_ids=[FIRST])]}
    done = dags_test("sync_one_account", airflow_env(sandbox, warehouse, one))
    assert done.returncode == 0, done.stdout[-4000:]
    one_account_requests = mapping_requests(sandbox)
    assert one_account_requests == -(-expected["synced"] // 2500)
    single = row_of(warehouse, "sync_one_account")
    assert (single["advertiser_ids"], json.loads(single["audience_ids"])) == (FIRST, {FIRST: single["audience_id"]})

    two = {"dag_id": "sync_two_accounts", "tasks": [sync_task("sync", "Two accounts", advertiser_ids=ACCOUNTS)]}
    done = dags_test("sync_two_accounts", airflow_env(sandbox, warehouse, two))
    assert done.returncode == 0, done.stdout[-4000:]
    assert mapping_requests(sandbox) - one_account_requests == one_account_requests  # no extra request
    row = row_of(warehouse, "sync_two_accounts")
    owned = audiences_named(sandbox, "Two accounts")
    assert sorted(owned) == ACCOUNTS and all(len(ids) == 1 for ids in owned.values())
    assert row["advertiser_ids"] == f"{FIRST},{SECOND}" and row["advertiser_id"] == FIRST
    assert json.loads(row["audience_ids"]) == {FIRST: owned[FIRST][0], SECOND: owned[SECOND][0]}
    assert row["audience_id"] == owned[FIRST][0]
    for account in ACCOUNTS:
        assert sorted(sandbox.members(owned[account][0])) == sorted(expected["members"])
    assert (row["entered"], row["synced"], row["pending"], row["errored"], row["status"]) == (
        expected["entered"],
        expected["synced"],
        0,
        0,
        "finished",
    )
    with sqlite3.connect(os.path.join(os.environ["AIRFLOW_HOME"], "airflow.db")) as db:
        [(value,)] = db.execute(
            "SELECT value FROM xcom WHERE dag_id = 'sync_two_accounts' AND key = 'tiktok_audience'"
        ).fetchall()
    audience_xcom = json.loads(value)
    assert audience_xcom["advertiser_ids"] == ACCOUNTS and audience_xcom["audience_ids"] == json.loads(
        row["audience_ids"]
    )


@pytest.mark.usefixtures("airflow_home")
def test_a_retry_after_a_killed_attempt_resumes_into_the_same_audiences(start_sandbox, tmp_path):
    sandbox = start_sandbox(advertiser_ids=ACCOUNTS, valid_after_seconds=0, latency_ms=150)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 6_000)
    expected = expected_sync(frame, truths)
    batches = -(-expected["synced"] // 200)
    task = sync_task("sync", "Resumed twice", advertiser_ids=ACCOUNTS, batch_size=200, max_qps=8, concurrency=2)
    env = airflow_env(sandbox, warehouse, {"dag_id": "sync_kill_two", "tasks": [task]})

    first = start_dags_test("sync_kill_two", env)
    while mapping_requests(sandbox) < batches // 2:
        assert first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the worker dies mid-upload
    first.wait()
    sent_before = mapping_requests(sandbox)
    with sqlite3.connect(warehouse) as db:
        [(run_id, phase, state)] = db.execute("SELECT run_id, status, state FROM tiktok_audience_sync_ledger")
    assert phase == "pending"
    before = audiences_named(sandbox, "Resumed twice")
    assert json.loads(state)["other_audiences"] == {SECOND: before[SECOND][0]}  # kept for the retry

    done = tasks_test("sync_kill_two", "sync", run_id, env)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Resuming" in done.stdout
    assert audiences_named(sandbox, "Resumed twice") == before  # no audience created again, none lost
    row = row_of(warehouse, "sync_kill_two")
    assert json.loads(row["audience_ids"]) == {FIRST: before[FIRST][0], SECOND: before[SECOND][0]}
    for account in ACCOUNTS:
        assert sorted(sandbox.members(before[account][0])) == sorted(expected["members"])
    assert (row["synced"], row["pending"], row["errored"], row["attempts"]) == (expected["synced"], 0, 0, 2)
    remaining = batches - sent_before
    assert remaining <= mapping_requests(sandbox) - sent_before <= remaining + 2  # in-flight ones may go again


@pytest.mark.usefixtures("airflow_home")
def test_customer_files_sync_to_the_first_account_and_share_with_the_second(start_sandbox, tmp_path):
    sandbox = start_sandbox(advertiser_ids=ACCOUNTS, valid_after_seconds=0)
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 4_000)
    expected = expected_sync(frame, truths, fields=("email",))
    task = sync_task(
        "sync",
        "Shared file audience",
        advertiser_ids=ACCOUNTS,
        upload_method="file",
        match_fields={"email": "email"},
        batch_size=1000,
    )
    env = airflow_env(sandbox, warehouse, {"dag_id": "sync_file_two", "tasks": [task]})
    done = dags_test("sync_file_two", env)
    assert done.returncode == 0, done.stdout[-4000:]
    row = row_of(warehouse, "sync_file_two")
    audience = sandbox.audience(row["audience_id"])
    assert (audience["advertiser_id"], audience["shared_with"]) == (FIRST, [SECOND])
    assert sorted(sandbox.members(row["audience_id"])) == sorted(expected["members"])
    assert row["advertiser_ids"] == f"{FIRST},{SECOND}"
    assert json.loads(row["audience_ids"]) == {FIRST: row["audience_id"], SECOND: row["audience_id"]}
    requests = sandbox.stats()["requests"]
    assert requests["dmp/custom_audience/share/"] == {"0": 1} and "segment/mapping/" not in requests

    with sqlite3.connect(warehouse) as db:
        [(run_id,)] = db.execute("SELECT run_id FROM tiktok_audience_sync_ledger")
    again = tasks_test("sync_file_two", "sync", run_id, env)  # cleared and run again: sharing again is harmless
    assert again.returncode == 0, again.stdout[-4000:]
    assert sandbox.audience(row["audience_id"])["shared_with"] == [SECOND]
    assert audiences_named(sandbox, "Shared file audience") == {FIRST: [row["audience_id"]]}


@pytest.mark.usefixtures("airflow_home")
def test_a_refused_share_fails_the_sync_and_its_results_row_names_the_audience(start_sandbox, tmp_path):
    """Two accounts of different Business Centers: the file audience is made from the first file, the share
    is refused; the task fails without retrying and the row says failed with the audience, not 'staging'."""
    sandbox = start_sandbox(advertiser_ids=ACCOUNTS, valid_after_seconds=0, business_center=ACCOUNTS)
    warehouse = tmp_path / "warehouse.db"
    seed_warehouse(warehouse, 2_000)
    task = sync_task(
        "sync",
        "Unshareable",
        advertiser_ids=ACCOUNTS,
        upload_method="file",
        match_fields={"email": "email"},
        batch_size=1000,
        retries=2,
        retry_delay=0,
    )
    done = dags_test(
        "sync_unshareable", airflow_env(sandbox, warehouse, {"dag_id": "sync_unshareable", "tasks": [task]})
    )
    assert done.returncode != 0 and "same Business Center" in done.stdout
    row = row_of(warehouse, "sync_unshareable")
    [audience_id] = audiences_named(sandbox, "Unshareable")[FIRST]
    assert (row["status"], row["audience_id"], row["attempts"]) == ("failed", audience_id, 1)
    assert sandbox.stats()["requests"]["dmp/custom_audience/share/"] == {"40002": 1}  # refused once, not retried
