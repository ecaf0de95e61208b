"""How fast the "TikTok audiences" page renders: 300 audiences x 365 daily syncs in a SQLite results table.

Prints the first (cold: full table read) and warm page times, the audience page and the run page.
``python tests/benchmarks/bench_ui.py``
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

AUDIENCES, DAYS = 300, 365


def main() -> None:
    from tests.unit.plugins.factory import result_row, write_sqlite

    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    write_sqlite(work / "w.db", [result_row(a, d) for a in range(AUDIENCES) for d in range(DAYS)])
    os.environ["AIRFLOW_CONN_BENCH_WH"] = json.dumps({"conn_type": "sqlite", "host": str(work / "w.db")})
    os.environ["AIRFLOW__TIKTOK__RESULTS_SOURCES"] = "bench_wh"
    os.environ["AIRFLOW__TIKTOK__UI_TIKTOK_CONN_ID"] = ""

    from fastapi.testclient import TestClient

    from airflow_provider_tiktok.plugins.app import create_app, readable_dag_ids

    def client() -> TestClient:
        app = create_app()
        app.dependency_overrides[readable_dag_ids] = lambda: {"tiktok_canvas_audience_sync"}
        return TestClient(app)

    run_id = result_row(0, DAYS - 1)["run_id"]
    print(f"{AUDIENCES} audiences x {DAYS} daily runs = {AUDIENCES * DAYS:,} result rows")
    timed(client(), "first request in this process (+imports)", "/audiences")
    fresh = client()  # a new cache: the one read a page waits for; later reads run in the background
    for label, url in (
        ("audiences page, first read of a source", "/audiences"),
        ("audiences page, warm", "/audiences"),
        ("audience page (365-run chart)", "/audience?advertiser=7000000000001&audience=900042"),
        ("run page (300 syncs)", f"/runs/tiktok_canvas_audience_sync/{run_id}"),
    ):
        timed(fresh, label, url)
    warmed = client()
    timed(warmed, "nav icon (starts reading in background)", "/static/icon.svg")
    time.sleep(3)  # the user finds the menu entry
    timed(warmed, "audiences page after the nav icon", "/audiences")


def timed(client, label: str, url: str) -> None:
    started = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.text[:500]
    print(f"{label:<40} {time.perf_counter() - started:6.3f} s  ({len(response.content) / 1024:,.0f} KiB)")


if __name__ == "__main__":
    main()
