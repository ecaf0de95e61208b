"""Lineage names: the audience asset, and OpenLineage inputs/outputs of a sync."""

from __future__ import annotations

import json

from airflow_provider_tiktok.lineage import (
    audience_alias,
    audience_asset,
    audience_asset_uri,
    sync_lineage,
    tables_read_by,
)

ENTRANTS_OF_STEP = """
    SELECT user_id, email, phone, idfa, gaid
    FROM canvas_step_entrants
    WHERE canvas_id = :canvas_id AND step_id = :step_id
      AND entered_at >= :interval_start AND entered_at < :interval_end
    ORDER BY entered_at, user_id
"""  # the example DAG's query


def test_asset_uri_uses_the_id_or_the_quoted_name():
    assert audience_asset_uri("7000000000001", "123456") == "tiktok://7000000000001/audiences/123456"
    assert audience_asset_uri(7, "Winback / step 1") == "tiktok://7/audiences/Winback%20%2F%20step%201"
    asset = audience_asset("7", "Winback - step 1")
    assert asset.uri == "tiktok://7/audiences/Winback%20-%20step%201" and asset.name == asset.uri
    assert audience_alias().name == "tiktok_audience_syncs"


def test_tables_read_by_a_query_skip_ctes_and_include_joins_and_subqueries():
    sql = (
        "WITH recent AS (SELECT * FROM crm.events) SELECT u.email FROM users u JOIN recent r ON r.id = u.id "
        "WHERE u.id IN (SELECT id FROM optins) AND day = :day"
    )
    assert tables_read_by(sql) == ["crm.events", "users", "optins"]
    assert tables_read_by(ENTRANTS_OF_STEP) == ["canvas_step_entrants"]
    assert tables_read_by("((( not sql") == []


def test_sync_lineage_names_warehouse_tables_and_the_audience(monkeypatch):
    conn = {"conn_type": "postgres", "host": "db", "port": 5432, "schema": "analytics", "login": "u", "password": "pw"}
    monkeypatch.setenv("AIRFLOW_CONN_DWH", json.dumps(conn))
    lineage = sync_lineage(ENTRANTS_OF_STEP, "dwh", "7000000000001", "123", "Winback - step 1")
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("postgres://db:5432", "analytics.canvas_step_entrants")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("tiktok://7000000000001", "audiences/123")]
    assert "pw" not in repr(lineage) and ":u@" not in repr(lineage)
    by_name = sync_lineage(None, None, "7", None, "Winback - step 1")
    assert by_name.inputs == [] and by_name.outputs[0].name == "audiences/Winback%20-%20step%201"


def test_the_example_downstream_dag_is_scheduled_on_the_demo_audience_asset():
    import runpy
    from pathlib import Path

    dags = Path(__file__).resolve().parents[3] / "dags"
    dag = runpy.run_path(str(dags / "tiktok_audience_refreshed.py"))["dag"]
    assert [asset.uri for asset in dag.timetable.asset_condition.objects] == [
        audience_asset_uri("7000000000001", "Loyalty - VIP lookalike seed")
    ]
