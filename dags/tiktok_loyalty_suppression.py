"""Keep a suppression audience of loyal customers exact: add who is loyal now, remove who lapsed.

Ads excluding this audience stop targeting people who already buy. Runs daily over the whole
``loyalty_members`` table (a full refresh, not an increment), so membership always mirrors it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator
from airflow_provider_tiktok.sync import retry_arguments

AUDIENCE = "Suppression - loyal customers"
MEMBERS = "SELECT user_id, email, phone, idfa, gaid FROM loyalty_members WHERE status = :status ORDER BY user_id"
COMMON = {
    "tiktok_conn_id": "tiktok_default",
    "warehouse_conn_id": "tiktok_warehouse",
    "audience_name": AUDIENCE,
    "sql": MEMBERS,
    "match_fields": {"email": "email", "phone": "phone", "idfa": "idfa", "gaid": "gaid"},
    "default_phone_country": "US",
    "pool": "tiktok_api",
    "max_qps": 12.5,
    "retry_window": timedelta(hours=13),
    **retry_arguments(timedelta(hours=13)),
}

with DAG(
    "tiktok_loyalty_suppression",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tiktok", "suppression", "example"],
    doc_md=__doc__,
):
    add_loyal = SyncAudienceOperator(task_id="add_loyal", action="add", parameters={"status": "active"}, **COMMON)
    remove_lapsed = SyncAudienceOperator(
        task_id="remove_lapsed", action="remove", parameters={"status": "lapsed"}, **COMMON
    )
    add_loyal >> remove_lapsed
