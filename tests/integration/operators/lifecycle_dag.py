"""DAGs of lifecycle operators built from the JSON in $TIKTOK_LIFECYCLE_SPEC, for real ``airflow dags test`` runs.

``{"dag_id": ..., "tasks": [{"kind": "lookalike" | "share" | "delete", "task_id": ..., ...}], "chain": true}``
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, chain

from airflow_provider_tiktok.operators.lifecycle import (
    CreateLookalikeAudienceOperator,
    DeleteAudienceOperator,
    ShareAudienceOperator,
)

KINDS = {
    "lookalike": CreateLookalikeAudienceOperator,
    "share": ShareAudienceOperator,
    "delete": DeleteAudienceOperator,
}
spec = json.loads(os.environ.get("TIKTOK_LIFECYCLE_SPEC") or "{}")

if spec:
    with DAG(spec["dag_id"], schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        tasks = []
        for task in spec["tasks"]:
            kwargs = {k: v for k, v in task.items() if k != "kind"}
            if "wait_timeout" in kwargs:
                kwargs["wait_timeout"] = timedelta(seconds=kwargs["wait_timeout"])
            tasks.append(KINDS[task["kind"]](**kwargs))
        if spec.get("chain", True):
            chain(*tasks)
