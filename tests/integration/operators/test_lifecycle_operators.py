"""Lifecycle operators as real Airflow tasks (``airflow dags test``) against the emulator.

Seeds are made beforehand with our own hook and ``FileUploader`` (the customer-file path), in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.sync.file_upload import FileUploader
from tests.integration.harness import dags_test

OWNER, PARTNER = "7000000000001", "7000000000002"
HERE = Path(__file__).parent


@pytest.fixture
def lifecycle_dags(airflow_home):
    shutil.copy(HERE / "lifecycle_dag.py", airflow_home / "dags" / "lifecycle_dag.py")


@pytest.fixture
def sandbox(start_sandbox, request):
    return start_sandbox(advertiser_ids=[OWNER, PARTNER], **getattr(request, "param", {"valid_after_seconds": 0}))


def emails(number: int, users: range) -> UserBatch:
    digests = [hashlib.sha256(f"vip{n}@example.com".encode()).hexdigest() for n in users]
    return UserBatch(number, ("EMAIL_SHA256",), (pa.array(digests),))


def hook_for(sandbox) -> TikTokHook:
    return TikTokHook.for_base_url(sandbox.base_url, sandbox.access_token)


def file_audience(sandbox, name: str, users: range) -> str:
    with closing(hook_for(sandbox)) as hook:
        return FileUploader(hook, OWNER, ("EMAIL_SHA256",)).create_audience(name, emails(1, users))


def lifecycle_env(sandbox, dag_id: str, tasks: list[dict], chain: bool = True) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "TIKTOK_LIFECYCLE_SPEC": json.dumps({"dag_id": dag_id, "tasks": tasks, "chain": chain}),
    }


def run(sandbox, dag_id: str, tasks: list[dict], *, logical_date: str = "2026-11-08T00:00:00+00:00", chain=True):
    return dags_test(dag_id, lifecycle_env(sandbox, dag_id, tasks, chain), logical_date=logical_date)


def returned(dag_id: str, task_id: str) -> list[dict]:
    """The task's return values, oldest run first."""
    with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' ORDER BY timestamp",
            (dag_id, task_id),
        ).fetchall()
    return [json.loads(value) if isinstance(value, str | bytes) else value for (value,) in rows]


def lists(sandbox) -> int:
    return int(sandbox.stats()["requests"].get("dmp/custom_audience/list/", {}).get("0", 0))


def named(sandbox, name: str) -> list[dict]:
    return [a for a in sandbox.stats()["audiences"].values() if a["name"] == name]


LOOKALIKE_THEN_SHARE = [
    {
        "kind": "lookalike",
        "task_id": "lookalike",
        "lookalike_name": "VIP lookalike",
        "seed_audience_name": "VIP seed",
        "location_ids": ["6252001"],
        "audience_size": "NARROW",
        "deferrable": True,
        "poke_interval": 1,
        "wait_timeout": 120,
    },
    {
        "kind": "share",
        "task_id": "share",
        "audience_id": "{{ ti.xcom_pull(task_ids='lookalike')['audience_id'] }}",
        "shared_advertiser_ids": [PARTNER],
    },
]


@pytest.mark.usefixtures("lifecycle_dags")
@pytest.mark.parametrize("sandbox", [{"valid_after_seconds": 0, "min_audience_size": 10}], indirect=True)
def test_lookalike_waits_deferred_for_its_seed_is_shared_and_a_rerun_reuses_it(sandbox):
    seed_id = file_audience(sandbox, "VIP seed", range(50))  # too small to seed a lookalike: the task defers
    sandbox.reset_stats()  # count only the task's requests from here
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run, sandbox, "vip_lookalike", LOOKALIKE_THEN_SHARE)
        deadline = time.monotonic() + 300
        while lists(sandbox) < 2 and not running.done():  # the lookalike's name, then the seed's
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with closing(hook_for(sandbox)) as hook:
            FileUploader(hook, OWNER, ("EMAIL_SHA256",)).send(emails(2, range(50, 1200)), seed_id, "add")
        done = running.result(timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "deferred" in done.stdout.lower()
    [first] = returned("vip_lookalike", "lookalike")
    assert (first["created"], first["source_audience_id"], first["name"]) == (True, seed_id, "VIP lookalike")
    lookalike = sandbox.audience(first["audience_id"])
    assert lookalike["kind"] == "lookalike" and lookalike["size"] == 1200 * 2  # NARROW: the emulator's 2x
    assert lookalike["lookalike_spec"]["source_audience_id"] == seed_id
    assert lookalike["shared_with"] == [PARTNER]
    [shared] = returned("vip_lookalike", "share")
    assert shared == {"advertiser_id": OWNER, "audience_id": first["audience_id"], "shared_advertiser_ids": [PARTNER]}

    again = run(sandbox, "vip_lookalike", LOOKALIKE_THEN_SHARE, logical_date="2026-11-09T00:00:00+00:00")
    assert again.returncode == 0, again.stdout[-4000:]
    second = returned("vip_lookalike", "lookalike")[-1]
    assert (second["created"], second["audience_id"]) == (False, first["audience_id"])
    assert len(named(sandbox, "VIP lookalike")) == 1
    assert sandbox.audience(first["audience_id"])["shared_with"] == [PARTNER]
    assert sandbox.stats()["requests"]["dmp/custom_audience/lookalike/create/"] == {"0": 1}


@pytest.mark.usefixtures("lifecycle_dags")
def test_refusals_fail_without_retry_and_say_why(sandbox):
    taken = file_audience(sandbox, "Taken name", range(200))
    small = file_audience(sandbox, "Small seed", range(50))
    tasks = [
        {
            "kind": "lookalike",
            "task_id": "name_taken",
            "lookalike_name": "Taken name",
            "seed_audience_id": small,
            "location_ids": ["6252001"],
            "retries": 3,
        },
        {
            "kind": "lookalike",
            "task_id": "seed_too_small",
            "lookalike_name": "From a small seed",
            "seed_audience_id": small,
            "location_ids": ["6252001"],
            "wait_for_seed": False,
            "retries": 3,
        },
        {"kind": "share", "task_id": "share_with_self", "audience_id": taken, "shared_advertiser_ids": [OWNER]},
    ]
    done = run(sandbox, "lifecycle_refusals", tasks, chain=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"Audience 'Taken name' ({taken}) exists and is not a lookalike" in output
    assert "The source audience has 50 members; at least 100 are needed" in output
    assert "owns the audience; share with other accounts" in output
    assert output.count("new_state=failed") == 3 and "up_for_retry" not in output.lower()
    assert named(sandbox, "From a small seed") == []


@pytest.mark.usefixtures("lifecycle_dags")
def test_delete_refuses_an_audience_in_use_unless_forced_and_a_rerun_finds_nothing_left(sandbox):
    in_use = file_audience(sandbox, "In use", range(100))
    idle = file_audience(sandbox, "Idle", range(100, 200))
    paused = file_audience(sandbox, "Paused", range(200, 300))
    with closing(hook_for(sandbox)) as hook:
        for audience_id, adgroup in ((in_use, "1800000000001"), (paused, "1800000000002")):
            body = {
                "advertiser_id": OWNER,
                "custom_audience_id": audience_id,
                "adgroup_ids": [adgroup],
                "action_mode": "Apply",
                "usage_mode": "Include",
            }
            hook.call("POST", "dmp/custom_audience/apply/", body=body)
    sandbox.set_adgroup("1800000000002", "DISABLE")
    delete = {"kind": "delete", "task_id": "delete", "audience_ids": [in_use, paused], "audience_names": ["Idle"]}

    refused = run(sandbox, "delete_audiences", [delete])
    assert refused.returncode != 0
    assert f"applied to enabled ad groups ({in_use} in ad group(s) 1800000000001)" in refused.stdout + refused.stderr
    assert len(sandbox.stats()["audiences"]) == 3  # nothing deleted

    forced = run(sandbox, "delete_audiences", [{**delete, "force": True}], logical_date="2026-11-09T00:00:00+00:00")
    assert forced.returncode == 0, forced.stdout[-4000:]
    assert sandbox.stats()["audiences"] == {}
    assert sorted(returned("delete_audiences", "delete")[-1]["deleted"]) == sorted([in_use, paused, idle])

    rerun = run(sandbox, "delete_audiences", [{**delete, "force": True}], logical_date="2026-11-10T00:00:00+00:00")
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    last = returned("delete_audiences", "delete")[-1]
    assert (last["deleted"], sorted(last["missing"])) == ([], sorted([in_use, paused, "'Idle'"]))


@pytest.mark.usefixtures("example_dags")
def test_the_vip_lookalike_example_dag_runs_end_to_end(sandbox, tmp_path):
    from demo.seed import seed

    warehouse = tmp_path / "warehouse.db"
    seed(f"sqlite:///{warehouse}", 12_000, days=1)
    env = {
        **os.environ,
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }
    done = dags_test("tiktok_vip_lookalike", env)
    assert done.returncode == 0, done.stdout[-4000:]
    [seed_audience] = named(sandbox, "Loyalty - VIP seed")
    [lookalike] = returned("tiktok_vip_lookalike", "create_vip_lookalike")
    details = sandbox.audience(lookalike["audience_id"])
    assert details["lookalike_spec"]["source_audience_id"] == lookalike["source_audience_id"]
    assert details["size"] == seed_audience["members"] * 5 >= 5_000  # BALANCED: the emulator's 5x of the seed
    assert details["shared_with"] == [PARTNER]
