"""Results-table rows as the sync writes them, for UI tests."""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_provider_tiktok.sync.results import RESULTS

TABLE = "tiktok_audience_sync_results"
COLUMNS = dict(RESULTS.columns)  # the schema the sync writes, defined once
START = datetime(2025, 11, 26, tzinfo=timezone.utc)


def result_row(
    audience: int, day: int, *, dag_id: str = "tiktok_canvas_audience_sync", rng: random.Random | None = None
) -> dict[str, Any]:
    """One sync of audience ``audience`` on day ``day``; buckets add up like the operator's do."""
    rng = rng or random.Random(audience * 1000 + day)
    entered = rng.randrange(1_000, 20_000)
    invalid_email, duplicate = rng.randrange(0, 200), rng.randrange(0, 150)
    errored = 25 if day % 7 == 6 else 0
    synced = entered - invalid_email - duplicate - errored
    at = START + timedelta(days=day, minutes=audience % 60)
    return {
        "dag_id": dag_id,
        "task_id": "sync_step",
        "run_id": f"scheduled__{(START + timedelta(days=day)).isoformat()}",
        "map_index": audience,
        "advertiser_id": "7000000000001",
        "audience_id": str(900_000 + audience),
        "audience_name": f"Journey {audience:03d} - step",
        "action": "add",
        "status": "failed" if errored else "finished",
        "entered": entered,
        "synced": synced,
        "not_synced": invalid_email + duplicate,
        "pending": 0,
        "errored": errored,
        "removed": 0,
        "unchanged": 0,
        "not_synced_by_reason": json.dumps({"invalid_email": invalid_email, "duplicate": duplicate}),
        "errored_by_reason": json.dumps({"api_error_40105": errored} if errored else {}),
        "requests": entered // 10_000 + 1,
        "duration_seconds": 3.5,
        "time_to_first_request_seconds": 0.8,
        "first_attempt_at": at.isoformat(),
        "updated_at": (at + timedelta(seconds=4)).isoformat(),
    }


def write_sqlite(path: Path, rows: list[dict[str, Any]], table: str = TABLE) -> None:
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY (dag_id, task_id, run_id, map_index))")
        db.executemany(
            f"INSERT OR REPLACE INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            [tuple(row.get(name) for name in COLUMNS) for row in rows],
        )
