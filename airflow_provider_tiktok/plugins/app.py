"""The plugin's FastAPI app: HTML pages and their JSON, every route behind Airflow's own authentication.

FastAPI apps from plugins are mounted as they are, without Airflow's auth, so each route here depends on
``readable_dag_ids``: no valid Airflow session cookie or bearer token -> 401/403 (Airflow's own ``get_user``),
and only rows of DAGs the user may read are ever used. Imported by the API server only (see ``LazyApp``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from airflow_provider_tiktok.plugins import render
from airflow_provider_tiktok.plugins.rows import (
    audience_of,
    by_audience,
    count_columns,
    history_of,
    latest_per_audience,
    normalise,
    public,
    readable,
    recent_values,
    rows_of_run,
    series,
)
from airflow_provider_tiktok.plugins.sources import AudienceSizes, ResultsCache, configured_sources

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"audiences.css": "text/css", "audiences.js": "text/javascript", "icon.svg": "image/svg+xml"}
SPARK_RUNS = 30


def readable_dag_ids(user: GetUserDep) -> set[str]:
    """The DAGs the signed-in user may read; Airflow's own ``get_user`` answers 401/403 when nobody is."""
    return get_auth_manager().get_authorized_dag_ids(user=user, method="GET")


ReadableDags = Annotated[set[str], Depends(readable_dag_ids)]


def _tiktok_conn_id() -> str | None:
    return conf.get("tiktok", "ui_tiktok_conn_id", fallback="tiktok_default") or None


def _ui_root() -> str:
    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def create_app(results: ResultsCache | None = None, sizes: AudienceSizes | None = None) -> FastAPI:
    results = results or ResultsCache()
    sizes = sizes or AudienceSizes(_tiktok_conn_id)
    app = FastAPI(title="TikTok audiences", docs_url=None, redoc_url=None, openapi_url=None)

    def visible(dag_ids: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
        rows, errors = results.rows(configured_sources())
        if not configured_sources():
            errors = ["No results tables configured: set [tiktok] results_sources (AIRFLOW__TIKTOK__RESULTS_SOURCES)."]
        return readable(rows, dag_ids), errors

    def audiences(dag_ids: set[str]) -> dict[str, Any]:
        rows, errors = visible(dag_ids)
        grouped = by_audience(rows)
        latest = [normalise(row) for row in latest_per_audience(grouped)]
        return {
            "latest": latest,
            "columns": count_columns(latest),
            "sizes": sizes.get(audience_of(r) for r in latest),
            "recent_synced": recent_values(grouped, "synced", SPARK_RUNS),
            "errors": errors,
        }

    def prefix(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/audiences", response_class=HTMLResponse)
    def audiences_page(request: Request, dag_ids: ReadableDags) -> str:
        found = audiences(dag_ids)
        return render.overview(
            found["latest"],
            found["columns"],
            found["sizes"],
            found["recent_synced"],
            prefix(request),
            _ui_root(),
            found["errors"],
        )

    @app.get("/api/audiences")
    def audiences_json(dag_ids: ReadableDags) -> dict[str, Any]:
        found = audiences(dag_ids)
        return {
            "columns": found["columns"],
            "audiences": [public(r, found["sizes"].get(audience_of(r))) for r in found["latest"]],
            "errors": found["errors"],
        }

    def one_audience(dag_ids: set[str], advertiser: str, audience: str) -> tuple[list[dict[str, Any]], list[str]]:
        rows, _ = visible(dag_ids)
        history = [normalise(row) for row in history_of(rows, advertiser, audience)]
        if not history:
            raise HTTPException(status_code=404, detail="No syncs of this audience that you may read.")
        return history, count_columns(history)

    @app.get("/audience", response_class=HTMLResponse)
    def audience_page(request: Request, dag_ids: ReadableDags, advertiser: str = "", audience: str = "") -> str:
        history, columns = one_audience(dag_ids, advertiser, audience)
        size = sizes.get([(advertiser, audience)])[(advertiser, audience)]
        return render.audience_page(history, columns, size, prefix(request), _ui_root())

    @app.get("/api/audience")
    def audience_json(dag_ids: ReadableDags, advertiser: str = "", audience: str = "") -> dict[str, Any]:
        history, columns = one_audience(dag_ids, advertiser, audience)
        return {"columns": columns, "runs": [public(r) for r in history], "series": series(history, columns)}

    def run(dag_ids: set[str], dag_id: str, run_id: str, task_id: str | None, map_index: int | None) -> list:
        if dag_id not in dag_ids:
            raise HTTPException(status_code=403, detail="You may not read this DAG.")
        rows, _ = visible(dag_ids)
        return [normalise(row) for row in rows_of_run(rows, dag_id, run_id, task_id or None, map_index)]

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_page(
        request: Request,
        dag_ids: ReadableDags,
        dag_id: str,
        run_id: str,
        task_id: str | None = None,
        map_index: int | None = None,
    ) -> str:
        chosen = run(dag_ids, dag_id, run_id, task_id, map_index)
        return render.run_page(chosen, count_columns(chosen), dag_id, run_id, prefix(request), _ui_root())

    @app.get("/api/runs/{dag_id}/{run_id}")
    def run_json(
        dag_ids: ReadableDags, dag_id: str, run_id: str, task_id: str | None = None, map_index: int | None = None
    ) -> dict[str, Any]:
        chosen = run(dag_ids, dag_id, run_id, task_id, map_index)
        return {"columns": count_columns(chosen), "syncs": [public(r) for r in chosen]}

    @app.get("/static/{name}")
    def static(name: str, _: ReadableDags) -> FileResponse:
        """Also the first request of every Airflow UI page (the nav icon): a chance to read the tables early."""
        results.warm(configured_sources())
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=300"})

    return app
