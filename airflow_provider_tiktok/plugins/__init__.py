"""Airflow 3.1+ UI plugin: the "TikTok audiences" page, a per-run tab and a per-task-instance tab.

A FastAPI app mounted at ``/tiktok`` renders the pages; external views put them in Airflow's navigation
(Browse), on every DAG run and on every task instance. Every Airflow process imports plugins (scheduler,
task runners), so the app is built on its first request: only the API server ever imports FastAPI, pandas
or the warehouse code for it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/tiktok"


class LazyApp:
    """An ASGI app that builds the plugin's FastAPI app when the API server first routes a request to it."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_tiktok.plugins.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class TikTokAudiencesPlugin(AirflowPlugin):
    name = "tiktok_audiences"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "TikTok audiences"}]
    external_views = [
        {
            "name": "TikTok audiences",
            "href": f"{URL_PREFIX}/audiences",
            "icon": f"{URL_PREFIX}/static/icon.svg",
            "url_route": "tiktok-audiences",
            "category": "browse",
            "destination": "nav",
        },
        {
            "name": "TikTok sync",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "url_route": "tiktok-run",
            "destination": "dag_run",
        },
        {
            "name": "TikTok sync",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}?task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "url_route": "tiktok-task",
            "destination": "task_instance",
        },
    ]
