"""Row shaping for the audiences page: tolerant of columns, exact about numbers, silent about secrets."""

from __future__ import annotations

import json

from airflow_provider_tiktok.plugins.rows import (
    OAUTH_COMMAND,
    advice_for,
    by_audience,
    count_columns,
    latest_per_audience,
    normalise,
    public,
    readable,
    recent_values,
    rows_of_run,
    task_instance_path,
)
from tests.unit.plugins.factory import result_row

TODAY_COLUMNS = {"dag_id", "task_id", "run_id", "map_index", "advertiser_id", "audience_id", "audience_name",
                 "action", "status", "entered", "synced", "not_synced", "pending", "errored",
                 "not_synced_by_reason", "errored_by_reason", "requests", "updated_at"}  # fmt: skip


def test_a_table_without_removed_and_unchanged_shows_only_the_five_buckets():
    row = normalise({k: v for k, v in result_row(1, 0).items() if k in TODAY_COLUMNS})
    assert count_columns([row]) == ["entered", "synced", "not_synced", "pending", "errored"]
    assert "removed" not in row["counts"]


def test_new_columns_appear_and_unknown_numeric_columns_become_extra_figures():
    raw = {**result_row(1, 0), "coverage": "0.93", "upload_seconds": 2.5, "secret_note": "x", "batch_id": 7}
    row = normalise(raw)
    assert count_columns([row])[-2:] == ["removed", "unchanged"]
    assert row["extra"] == {"requests": 2.0, "duration_seconds": 3.5, "time_to_first_request_seconds": 0.8,
                            "coverage": 0.93, "upload_seconds": 2.5}  # fmt: skip


def test_reasons_are_parsed_from_json_text_or_dicts_and_garbage_is_ignored():
    assert normalise({"not_synced_by_reason": '{"duplicate": 3, "invalid_email": 0}'})["not_synced_by_reason"] == {
        "duplicate": 3
    }
    assert normalise({"errored_by_reason": {"api_error_40105": "4"}})["errored_by_reason"] == {"api_error_40105": 4}
    assert normalise({"not_synced_by_reason": "not json"})["not_synced_by_reason"] == {}


def test_latest_sync_per_audience_wins_and_readable_filters_by_dag():
    rows = [result_row(a, d) for a in range(3) for d in range(5)]
    rows.append(result_row(0, 9, dag_id="private_dag"))
    visible = readable(rows, {"tiktok_canvas_audience_sync"})
    latest = latest_per_audience(by_audience(visible))
    assert [r["map_index"] for r in latest] == [0, 1, 2]
    assert {r["run_id"] for r in latest} == {result_row(0, 4)["run_id"]}
    assert recent_values(by_audience(visible), "synced", 2)[("7000000000001", "900001")] == [
        result_row(1, 3)["synced"],
        result_row(1, 4)["synced"],
    ]


def test_a_run_view_holds_that_run_or_that_task_instance_only():
    rows = [result_row(a, d) for a in range(3) for d in range(2)]
    run_id = result_row(0, 1)["run_id"]
    assert [r["map_index"] for r in rows_of_run(rows, "tiktok_canvas_audience_sync", run_id)] == [0, 1, 2]
    assert [r["map_index"] for r in rows_of_run(rows, "tiktok_canvas_audience_sync", run_id, "sync_step", 2)] == [2]
    assert rows_of_run(rows, "other", run_id) == []


def test_advice_names_what_to_do_for_each_reason_and_code():
    assert OAUTH_COMMAND in advice_for("api_error_40105")
    assert "Business Center" in advice_for("api_error_40001")
    assert "max_qps" in advice_for("api_error_40100")
    assert "default_phone_country" in advice_for("invalid_phone")
    assert "transient" in advice_for("api_error_50000")
    assert advice_for("something_new") == "See the task's log for details."


def test_task_instance_path_is_the_airflow_3_ui_route_quoted():
    row = normalise({"dag_id": "d", "run_id": "manual__2026-11-26T00:00:00+00:00", "task_id": "t", "map_index": 2})
    assert task_instance_path(row) == "/dags/d/runs/manual__2026-11-26T00%3A00%3A00%2B00%3A00/tasks/t/mapped/2"
    assert task_instance_path({**row, "map_index": -1}).endswith("/tasks/t")


def test_public_json_carries_figures_and_names_only():
    raw = {**result_row(1, 6), "access_token": "tok-123", "email": "a@b.c"}
    shown = json.dumps(public(normalise(raw), {"cover_num": 10, "is_valid": True, "is_expiring": False}))
    assert "tok-123" not in shown and "a@b.c" not in shown
    assert json.loads(shown)["reasons"][0] == {
        "kind": "Not Synced",
        "reason": max(json.loads(raw["not_synced_by_reason"]).items(), key=lambda kv: kv[1])[0],
        "count": max(json.loads(raw["not_synced_by_reason"]).values()),
        "advice": advice_for(max(json.loads(raw["not_synced_by_reason"]).items(), key=lambda kv: kv[1])[0]),
    }
