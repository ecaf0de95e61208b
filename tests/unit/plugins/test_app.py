"""The plugin's routes: refused without an Airflow login, and only rows of readable DAGs with one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from airflow_provider_tiktok.plugins.app import create_app, readable_dag_ids
from airflow_provider_tiktok.plugins.sources import AudienceSizes, ResultsCache, ResultsSource
from tests.unit.plugins.factory import result_row

ROUTES = [
    "/audiences",
    "/api/audiences",
    "/audience?advertiser=7000000000001&audience=900000",
    "/runs/tiktok_canvas_audience_sync/x",
    "/api/runs/tiktok_canvas_audience_sync/x",
    "/static/audiences.css",
]


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TIKTOK__RESULTS_SOURCES", "warehouse")
    rows = [result_row(a, d) for a in range(2) for d in range(3)] + [result_row(5, 2, dag_id="private")]
    results = ResultsCache(reader=lambda source, since: rows if source == ResultsSource("warehouse") else [])
    sizes = AudienceSizes(lambda: "tiktok_default", fetch=lambda conn, adv, ids: {i: {"cover_num": 7} for i in ids})
    return create_app(results, sizes)


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refuses_a_request_without_an_airflow_login(app, route):
    assert TestClient(app).get(route).status_code in (401, 403)


def test_a_user_sees_only_audiences_of_dags_they_may_read(app):
    app.dependency_overrides[readable_dag_ids] = lambda: {"tiktok_canvas_audience_sync"}
    client = TestClient(app)
    body = client.get("/api/audiences").json()
    assert [a["audience_id"] for a in body["audiences"]] == ["900000", "900001"]
    assert client.get("/api/runs/private/" + result_row(5, 2)["run_id"]).status_code == 403
    assert client.get("/audience?advertiser=7000000000001&audience=900005").status_code == 404
    page = client.get("/audiences").text
    assert "Journey 000 - step" in page and "Journey 005" not in page


def test_run_view_shows_the_numbers_of_that_run(app):
    app.dependency_overrides[readable_dag_ids] = lambda: {"tiktok_canvas_audience_sync"}
    run_id = result_row(1, 1)["run_id"]
    syncs = TestClient(app).get(f"/api/runs/tiktok_canvas_audience_sync/{run_id}?task_id=sync_step&map_index=1")
    [sync] = syncs.json()["syncs"]
    assert sync["counts"]["synced"] == result_row(1, 1)["synced"]
    assert sync["counts"]["entered"] == result_row(1, 1)["entered"]


def test_sizes_are_fetched_in_the_background_and_shown_once_known(app):
    app.dependency_overrides[readable_dag_ids] = lambda: {"tiktok_canvas_audience_sync"}
    client = TestClient(app)
    first = client.get("/api/audiences").json()["audiences"]
    assert {a["tiktok"] is None for a in first} == {True}  # the page did not wait
    for _ in range(200):
        later = client.get("/api/audiences").json()["audiences"]
        if all(a["tiktok"] for a in later):
            break
    assert [a["tiktok"] for a in later] == [{"cover_num": 7}, {"cover_num": 7}]
