"""A DAG built from the JSON in $TIKTOK_TEST_SPEC, so integration tests run real Airflow tasks."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, chain

from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator
from airflow_provider_tiktok.sensors.tiktok import TikTokAudienceSensor

DURATIONS = ("retry_window", "attempt_budget", "retry_delay", "max_retry_delay")
KINDS = {"sync": SyncAudienceOperator, "sensor": TikTokAudienceSensor}
spec = json.loads(os.environ.get("TIKTOK_TEST_SPEC") or "{}")

if spec:
    with DAG(spec["dag_id"], schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        tasks = []
        for task in spec["tasks"]:
            kwargs = {k: timedelta(seconds=v) if k in DURATIONS else v for k, v in task.items() if k != "kind"}
            tasks.append(KINDS[task.get("kind", "sync")](**kwargs))
        chain(*tasks)
