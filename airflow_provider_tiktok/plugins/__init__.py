"""Airflow 3.1+ UI plugin: the "TikTok audiences" page, a per-run tab and a per-task-instance tab.

A FastAPI app mounted at ``/tiktok`` renders the pages; external views put them in Airflow's navigation
(Browse), on every DAG run and on every task instance. Nothing here runs unless Airflow loads plugins.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_tiktok.plugins.app import create_app

URL_PREFIX = "/tiktok"


class TikTokAudiencesPlugin(AirflowPlugin):
    name = "tiktok_audiences"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "TikTok audiences"}]
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
