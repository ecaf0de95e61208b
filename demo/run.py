"""The main job, end to end and offline: ``make demo`` (or ``python -m demo.run``).

Starts the TikTok emulator on loopback, seeds a SQLite warehouse with synthetic journey entrants,
runs ``airflow dags test tiktok_canvas_audience_sync`` for one day, prints the per-step metrics read
back from the results table, and stops the emulator. Everything lives under ``.demo/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from airflow_provider_tiktok.sandbox.__main__ import port_is_free
from airflow_provider_tiktok.sandbox.process import SandboxProcess
from demo.seed import seed

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "tiktok_canvas_audience_sync"
LOGICAL_DATE = "2026-11-02T00:00:00+00:00"  # its data interval is 2026-11-01, the seeded day


def airflow(env: dict[str, str], *args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=quiet, text=True)
    if done.returncode != 0:
        tail = (done.stdout or "")[-4000:] + (done.stderr or "")[-2000:] if quiet else ""
        raise SystemExit(f"`airflow {' '.join(args)}` failed (exit {done.returncode})\n{tail}")
    return done


def metrics_table(warehouse: Path, run_id_like: str = "%") -> str:
    with sqlite3.connect(warehouse) as db:
        rows = db.execute(
            "SELECT audience_name, entered, synced, not_synced, pending, errored, not_synced_by_reason, status "
            "FROM tiktok_audience_sync_results WHERE dag_id = ? AND run_id LIKE ? ORDER BY audience_name",
            (DAG_ID, run_id_like),
        ).fetchall()
    header = f"{'step audience':<34}{'Entered':>9}{'Synced':>9}{'Not Synced':>12}{'Pending':>9}{'Errored':>9}  status"
    lines = [header, "-" * len(header)]
    for name, entered, synced, not_synced, pending, errored, reasons, status in rows:
        lines.append(f"{name:<34}{entered:>9}{synced:>9}{not_synced:>12}{pending:>9}{errored:>9}  {status}")
        lines.append(f"{'':<34}  not synced by reason: {json.loads(reasons)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("TIKTOK_DEMO_PORT", "8765")))
    parser.add_argument("--entrants", type=int, default=50_000)
    args = parser.parse_args(argv)
    if not port_is_free("127.0.0.1", args.port):
        print(
            f"Port {args.port} on 127.0.0.1 is taken, so the TikTok emulator cannot start.\n"
            f"Stop whatever uses it, or run: make demo DEMO_PORT=<free port>",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "airflow").mkdir(parents=True)
    warehouse = WORK / "warehouse.db"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(WORK / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }
    print("1/5 preparing Airflow's metadata database ...", flush=True)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "tiktok_api", "4", "TikTok Marketing API budget (50 req/s shared)")
    print(f"2/5 seeding {args.entrants:,} synthetic entrants into {warehouse.relative_to(ROOT)} ...", flush=True)
    seed(f"sqlite:///{warehouse}", args.entrants, days=1)
    print(f"3/5 starting the TikTok emulator on 127.0.0.1:{args.port} ...", flush=True)
    with SandboxProcess(WORK / "sandbox.db", port=args.port, valid_after_seconds=5) as sandbox:
        env["AIRFLOW_CONN_TIKTOK_DEFAULT"] = sandbox.connection_json()
        print(f"4/5 airflow dags test {DAG_ID} {LOGICAL_DATE} (log: .demo/dag-test.log) ...", flush=True)
        with open(WORK / "dag-test.log", "w") as log:
            done = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, LOGICAL_DATE], env=env, stdout=log, stderr=log)
        if done.returncode != 0:
            print("The DAG run failed; the end of .demo/dag-test.log says:", file=sys.stderr)
            print(Path(WORK / "dag-test.log").read_text()[-3000:], file=sys.stderr)
            return done.returncode
        audiences = sandbox.stats()["audiences"]
    print("5/5 per-step metrics, read back from the results table:\n")
    print(metrics_table(warehouse))
    print(
        "\nAudiences in the emulator: " + ", ".join(f"{a['name']} ({a['members']} members)" for a in audiences.values())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
