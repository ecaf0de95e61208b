"""Sync journey-step entrants of each data interval into TikTok audiences, one mapped task per step.

Steps and audiences come from ``tiktok_canvas_audience_sync.yaml`` next to this file (read at parse
time from local disk only: no network or database calls while Airflow parses DAGs).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator
from airflow_provider_tiktok.sensors.tiktok import TikTokAudienceSensor
from airflow_provider_tiktok.sync import retry_arguments, share_of_budget

CONFIG = yaml.safe_load(Path(__file__).with_name("tiktok_canvas_audience_sync.yaml").read_text())
WINDOW = timedelta(hours=CONFIG["retry_window_hours"])
ENTRANTS_OF_STEP = """
    SELECT user_id, email, phone, idfa, gaid
    FROM canvas_step_entrants
    WHERE canvas_id = :canvas_id AND step_id = :step_id
      AND entered_at >= :interval_start AND entered_at < :interval_end
    ORDER BY entered_at, user_id
"""

with DAG(
    "tiktok_canvas_audience_sync",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tiktok", "audience-sync", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def launch_validation() -> list[dict[str, Any]]:
        """Refuse to launch without a working connection; one mapped sync per configured step."""
        from airflow.sdk import get_current_context

        from airflow_provider_tiktok.hooks.tiktok import TikTokHook

        context = get_current_context()
        interval = {
            "interval_start": context["data_interval_start"].isoformat(),
            "interval_end": context["data_interval_end"].isoformat(),
        }
        ok, message = TikTokHook(CONFIG["tiktok_conn_id"]).test_connection()
        if not ok:
            raise RuntimeError(f"TikTok connection {CONFIG['tiktok_conn_id']!r} does not work: {message}")
        return [
            {
                "audience_name": step["audience_name"],
                "parameters": {"canvas_id": step["canvas_id"], "step_id": step["step_id"], **interval},
            }
            for step in CONFIG["steps"]
        ]

    syncs = SyncAudienceOperator.partial(
        task_id="sync_step",
        map_index_template="{{ task.audience_name }}",  # the UI labels each mapped sync by its audience
        tiktok_conn_id=CONFIG["tiktok_conn_id"],
        warehouse_conn_id=CONFIG["warehouse_conn_id"],
        advertiser_id=CONFIG["advertiser_id"],
        sql=ENTRANTS_OF_STEP,
        match_fields=CONFIG["match_fields"],
        default_phone_country=CONFIG["default_phone_country"],
        pool=CONFIG["pool"],
        max_qps=share_of_budget(CONFIG["pool_slots"]),
        retry_window=WINDOW,
        **retry_arguments(WINDOW),
    ).expand_kwargs(launch_validation())

    @task
    def audiences_to_wait_for() -> list[dict[str, Any]]:
        return [
            {"audience_name": step["audience_name"], "min_size": step.get("min_size")}
            for step in CONFIG["steps"]
            if step.get("wait_until_valid") or step.get("min_size")
        ]

    waits = TikTokAudienceSensor.partial(
        task_id="wait_for_audience",
        tiktok_conn_id=CONFIG["tiktok_conn_id"],
        advertiser_id=CONFIG["advertiser_id"],
        deferrable=True,
        poke_interval=5,
        timeout=3600,
        soft_fail=True,  # a small audience is worth knowing about, not worth failing the run
    ).expand_kwargs(audiences_to_wait_for())

    @task
    def summary(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Log Entered / Synced / Not Synced / Pending / Errored per audience."""
        header = f"{'audience':<32} {'entered':>8} {'synced':>8} {'not_synced':>10} {'pending':>8} {'errored':>8}"
        lines = [header, "-" * len(header)]
        for m in metrics:
            lines.append(
                f"{m['audience_name']!s:<32} {m['entered']:>8} {m['synced']:>8} {m['not_synced_total']:>10} "
                f"{m['pending']:>8} {m['errored_total']:>8}"
            )
        print("\n".join(lines))
        return list(metrics)

    syncs >> waits
    summary(syncs.output)
