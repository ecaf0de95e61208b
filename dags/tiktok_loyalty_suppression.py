"""Keep a suppression audience of loyal customers equal to the warehouse's active loyalty members.

Ads excluding this audience stop targeting people who already buy. One mirror-mode task a day: users
who became loyal are added, users who lapsed are removed, users whose email or phone changed are
updated, and nobody else is sent. A query that suddenly returns far fewer users (a broken upstream
table) is refused before anything is removed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator
from airflow_provider_tiktok.sync import retry_arguments

AUDIENCE = "Suppression - loyal customers"
ACTIVE_MEMBERS = (
    "SELECT user_id, email, phone, idfa, gaid FROM loyalty_members WHERE status = 'active' ORDER BY user_id"
)
SETTINGS = {
    "tiktok_conn_id": "tiktok_default",
    "warehouse_conn_id": "tiktok_warehouse",
    "audience_name": AUDIENCE,
    "sql": ACTIVE_MEMBERS,
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
    SyncAudienceOperator(task_id="mirror_loyal", action="mirror", **SETTINGS)
