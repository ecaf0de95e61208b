"""Sync one journey step's entrants every 5 minutes: near-real-time, as the vendor step we model does.

Each run sends the users who entered the step during its 5-minute data interval and records, in the
results table, how long they waited between entering the step and TikTok acknowledging them
(``lag_p50_seconds``, ``lag_p95_seconds``, ``lag_max_seconds``): at most the interval plus the run's own time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG
from airflow.timetables.interval import DeltaDataIntervalTimetable

from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator

ENTRANTS_OF_THE_INTERVAL = """
    SELECT user_id, email, phone, idfa, gaid, entered_at
    FROM canvas_step_entrants
    WHERE canvas_id = 'winback' AND step_id = 'step_1'
      AND entered_at >= :interval_start AND entered_at < :interval_end
    ORDER BY entered_at, user_id
"""

with DAG(
    "tiktok_journey_step_every_5_minutes",
    schedule=DeltaDataIntervalTimetable(timedelta(minutes=5)),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tiktok", "audience-sync", "near-real-time", "example"],
    doc_md=__doc__,
):
    SyncAudienceOperator(
        task_id="sync_winback_step_1",
        tiktok_conn_id="tiktok_default",
        warehouse_conn_id="tiktok_warehouse",
        audience_name="Winback - step 1 (live)",
        sql=ENTRANTS_OF_THE_INTERVAL,
        parameters={
            "interval_start": "{{ data_interval_start.isoformat() }}",
            "interval_end": "{{ data_interval_end.isoformat() }}",
        },
        entered_at_column="entered_at",
        match_fields={"email": "email", "phone": "phone", "idfa": "idfa", "gaid": "gaid"},
        default_phone_country="US",
        retry_window=timedelta(minutes=30),  # a later run would resend nothing of this one's users anyway
        retries=3,
        retry_delay=timedelta(seconds=30),
    )
