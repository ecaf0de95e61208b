"""Runs when a TikTok audience was refreshed: scheduled on the audience's Airflow asset.

``SyncAudienceOperator`` emits an asset event for ``tiktok://<advertiser_id>/audiences/<audience name>``
after each sync, with the sync's metrics as the event's ``extra``. This DAG logs them; put whatever
should follow a refresh here (a report, a campaign update, a Slack message).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_tiktok.lineage import audience_asset

ADVERTISER_ID = "7000000000001"  # the demo emulator's ad account: use yours
AUDIENCE_NAME = "Loyalty - VIP lookalike seed"

with DAG(
    "tiktok_audience_refreshed",
    schedule=[audience_asset(ADVERTISER_ID, AUDIENCE_NAME)],
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["tiktok", "asset", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def log_refresh(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """One line per event: which audience, and the metrics its sync reported."""
        extras = []
        for asset, events in (triggering_asset_events or {}).items():
            for event in events:
                print(f"{asset.uri} refreshed at {event.timestamp}: {dict(event.extra or {})}")
                extras.append(dict(event.extra or {}))
        return extras

    log_refresh()
