"""VIP customers -> a lookalike audience, shared with a second ad account.

1. sync the active loyalty members (the VIP seed) into a TikTok Custom Audience;
2. wait (deferred) until TikTok has finished calculating it and it is large enough to seed a lookalike;
3. create the lookalike once (re-runs reuse it);
4. share the lookalike with another ad account of the same Business Center.

The second ad account is the Airflow Variable ``tiktok_partner_advertiser_id``, read when the task runs
(no network or database calls while Airflow parses DAGs); its default is the demo emulator's second account.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_tiktok.operators.lifecycle import CreateLookalikeAudienceOperator, ShareAudienceOperator
from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator
from airflow_provider_tiktok.sensors.tiktok import TikTokAudienceSensor
from airflow_provider_tiktok.sync import retry_arguments

SEED = "Loyalty - VIP seed"
LOOKALIKE = "Loyalty - VIP lookalike (US, balanced)"
SEED_MIN_SIZE = 1_000  # TikTok needs 100 to seed a lookalike; more makes a better one
WINDOW = timedelta(hours=13)
COMMON = {"tiktok_conn_id": "tiktok_default", "pool": "tiktok_api"}

with DAG(
    "tiktok_vip_lookalike",
    schedule="@weekly",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tiktok", "lookalike", "example"],
    doc_md=__doc__,
):
    seed = SyncAudienceOperator(
        task_id="sync_vip_seed",
        audience_name=SEED,
        warehouse_conn_id="tiktok_warehouse",
        sql="SELECT user_id, email, phone, idfa, gaid FROM loyalty_members WHERE status = 'active' ORDER BY user_id",
        match_fields={"email": "email", "phone": "phone", "idfa": "idfa", "gaid": "gaid"},
        default_phone_country="US",
        max_qps=12.5,
        retry_window=WINDOW,
        **retry_arguments(WINDOW),
        **COMMON,
    )
    seed_ready = TikTokAudienceSensor(
        task_id="wait_for_vip_seed",
        audience_name=SEED,
        min_size=SEED_MIN_SIZE,
        deferrable=True,
        poke_interval=60,
        timeout=int(timedelta(hours=12).total_seconds()),
        **COMMON,
    )
    lookalike = CreateLookalikeAudienceOperator(
        task_id="create_vip_lookalike",
        lookalike_name=LOOKALIKE,
        seed_audience_name=SEED,
        location_ids=["6252001"],  # United States
        audience_size="BALANCED",
        seed_min_size=SEED_MIN_SIZE,  # the sensor waited already: this is one cheap check
        deferrable=True,
        retries=3,
        **COMMON,
    )
    share = ShareAudienceOperator(
        task_id="share_vip_lookalike",
        audience_id="{{ ti.xcom_pull(task_ids='create_vip_lookalike')['audience_id'] }}",
        shared_advertiser_ids=["{{ var.value.get('tiktok_partner_advertiser_id', '7000000000002') }}"],
        retries=3,
        **COMMON,
    )
    seed >> seed_ready >> lookalike >> share
