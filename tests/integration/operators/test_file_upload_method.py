"""SyncAudienceOperator(upload_method="file"): the customer-file path end to end, with the same metrics."""

from __future__ import annotations

import pytest

from tests.integration.harness import airflow_env, dags_test, expected_sync, results
from tests.integration.operators.test_sync_operator import seed_warehouse, sync_task

EMAIL_ONLY = {"upload_method": "file", "match_fields": {"email": "email"}, "batch_size": 1000}


@pytest.mark.usefixtures("airflow_home")
def test_customer_files_add_then_remove_exactly_without_the_segment_api(sandbox, tmp_path):
    warehouse = tmp_path / "warehouse.db"
    frame, truths = seed_warehouse(warehouse, 8_000)
    spec = {"dag_id": "sync_file", "tasks": [sync_task("sync", "By file", **EMAIL_ONLY)]}
    done = dags_test("sync_file", airflow_env(sandbox, warehouse, spec))
    assert done.returncode == 0, done.stdout[-4000:]
    expected = expected_sync(frame, truths, fields=("email",))
    [row] = results(warehouse)
    assert sorted(sandbox.members(row["audience_id"])) == sorted(expected["members"])
    assert (row["entered"], row["synced"], row["status"]) == (expected["entered"], expected["synced"], "finished")
    stats = sandbox.stats()["requests"]
    files = -(-expected["synced"] // 1000)
    assert stats["dmp/custom_audience/file/upload/"] == {"0": files}
    assert stats["dmp/custom_audience/create/"] == {"0": 1}  # created from the first file
    assert stats["dmp/custom_audience/update/"] == {"0": files - 1}  # then one APPEND a file
    assert "segment/mapping/" not in stats

    first_rows = "SELECT * FROM entrants ORDER BY rowid LIMIT 2000"
    remove = {
        "dag_id": "unsync_file",
        "tasks": [sync_task("sync", "By file", action="remove", sql=first_rows, **EMAIL_ONLY)],
    }
    done = dags_test("unsync_file", airflow_env(sandbox, warehouse, remove))
    assert done.returncode == 0, done.stdout[-4000:]
    gone = expected_sync(frame.iloc[:2000], truths[:2000], fields=("email",))["members"]
    kept = expected_sync(frame.iloc[2000:], truths[2000:], fields=("email",))["members"] - gone
    assert sorted(sandbox.members(row["audience_id"])) == sorted(kept)
