"""The main job, end to end and offline: ``make demo`` (or ``python -m demo.run``).

Starts the TikTok emulator on loopback with two ad accounts of one Business Center, seeds a SQLite
warehouse with synthetic journey entrants of yesterday and the loyalty members, runs ``airflow dags test
tiktok_canvas_audience_sync`` for the latest daily interval, prints the per-step metrics read back from the
results table, then runs ``airflow dags test tiktok_vip_lookalike`` (VIP seed -> wait for its size ->
lookalike -> shared with the second account), prints what it made, and stops the emulator. Everything lives under
``.demo/``: connections in the metadata database, task logs where the API server reads them, DAGs
unpaused, so ``make ui`` (``demo/ui.py``) shows both runs, their logs and the "TikTok audiences" page.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow_provider_tiktok.sandbox.__main__ import port_is_free
from airflow_provider_tiktok.sandbox.process import SandboxProcess
from demo.seed import seed
from demo.ui import OWNER, PARTNER, demo_emulator, ui_is_running

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "tiktok_canvas_audience_sync"
LOOKALIKE_DAG_ID = "tiktok_vip_lookalike"


def latest_interval_end(now: datetime | None = None) -> datetime:
    """Today 00:00 UTC: the daily run whose data interval (yesterday) has just closed."""
    now = now or datetime.now(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def airflow(env: dict[str, str], *args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=quiet, text=True)
    if done.returncode != 0:
        tail = (done.stdout or "")[-4000:] + (done.stderr or "")[-2000:] if quiet else ""
        raise SystemExit(f"`airflow {' '.join(args)}` failed (exit {done.returncode})\n{tail}")
    return done


TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(?P<task_id>\S+) map_index=(?P<map_index>-?\d+)")
TASK_END = re.compile(r"\[DAG TEST\] end task task_id=\S+ map_index=-?\d+")
RUN_ID = re.compile(r"DagRun Finished: .*?run_id=(?P<run_id>[^,\s]+),")


def write_task_logs(dag_test_log: str, logs: Path, dag_id: str) -> list[Path]:
    """Split ``airflow dags test`` output into one file per task, where the API server looks for task logs.

    ``dags test`` runs every task in its own process and prints their logs, one task after the other,
    between ``[DAG TEST] starting`` / ``end task`` lines; the UI reads ``<base_log_folder>/dag_id=.../
    run_id=.../task_id=.../[map_index=N/]attempt=1.log`` (the default ``log_filename_template``).
    """
    found = RUN_ID.search(dag_test_log)
    if not found:
        return []
    run_dir = logs / f"dag_id={dag_id}" / f"run_id={found['run_id']}"
    written, current, lines = [], None, []
    for line in dag_test_log.splitlines(keepends=True):
        if start := TASK_START.search(line):
            current, lines = start, []
        if current is not None:
            lines.append(line)
        if current is not None and TASK_END.search(line):
            mapped = f"map_index={current['map_index']}/" if int(current["map_index"]) >= 0 else ""
            path = run_dir / f"task_id={current['task_id']}" / mapped / "attempt=1.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(lines))
            written.append(path)
            current = None
    return written


def metrics_table(warehouse: Path, run_id_like: str = "%", dag_id: str = DAG_ID) -> str:
    with sqlite3.connect(warehouse) as db:
        rows = db.execute(
            "SELECT audience_name, entered, synced, not_synced, pending, errored, not_synced_by_reason, status "
            "FROM tiktok_audience_sync_results WHERE dag_id = ? AND run_id LIKE ? ORDER BY audience_name",
            (dag_id, run_id_like),
        ).fetchall()
    header = f"{'step audience':<34}{'Entered':>9}{'Synced':>9}{'Not Synced':>12}{'Pending':>9}{'Errored':>9}  status"
    lines = [header, "-" * len(header)]
    for name, entered, synced, not_synced, pending, errored, reasons, status in rows:
        lines.append(f"{name:<34}{entered:>9}{synced:>9}{not_synced:>12}{pending:>9}{errored:>9}  {status}")
        lines.append(f"{'':<34}  not synced by reason: {json.loads(reasons)}")
    return "\n".join(lines)


def returned(metadata_db: Path, dag_id: str, task_id: str) -> dict:
    """A task's latest return value, as ``airflow dags test`` stored it in the metadata database's XCom table."""
    with sqlite3.connect(metadata_db) as db:
        found = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id),
        ).fetchone()
    if found is None:
        raise SystemExit(f"{dag_id}.{task_id} left no return value in {metadata_db}: see its log under .demo/.")
    return json.loads(found[0])


def lookalike_lines(metadata_db: Path, sandbox: SandboxProcess) -> str:
    """What the lookalike DAG made: its tasks' XCom, checked against what the emulator holds."""
    seed = returned(metadata_db, LOOKALIKE_DAG_ID, "wait_for_vip_seed")
    made = returned(metadata_db, LOOKALIKE_DAG_ID, "create_vip_lookalike")
    shared = returned(metadata_db, LOOKALIKE_DAG_ID, "share_vip_lookalike")
    held = sandbox.audience(made["audience_id"])
    return "\n".join(
        [
            f"seed audience      {seed['name']} ({seed['audience_id']}): size {seed['size']:,} when the sensor "
            f"passed (valid: {seed['is_valid']})",
            f"lookalike          {made['name']} ({made['audience_id']}): size {held['size']:,}, "
            f"seeded from {held['lookalike_spec']['source_audience_id']}",
            f"shared             by {shared['advertiser_id']} with {', '.join(shared['shared_advertiser_ids'])} "
            f"(emulator: shared with {', '.join(held['shared_with'])})",
        ]
    )


def shown(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def dags_test(env: dict[str, str], step: str, dag_id: str, logical_date: datetime, log_path: Path) -> bool:
    """``airflow dags test`` into ``log_path``, then its task logs where the UI reads them; on failure, its end."""
    print(f"{step} airflow dags test {dag_id} {logical_date.isoformat()} (log: {shown(log_path)}) ...", flush=True)
    with open(log_path, "w") as log:
        command = [AIRFLOW, "dags", "test", dag_id, logical_date.isoformat()]
        done = subprocess.run(command, env=env, stdout=log, stderr=log)
    if done.returncode != 0:
        print(f"The {dag_id} run failed; the end of {shown(log_path)} says:", file=sys.stderr)
        print(log_path.read_text()[-3000:], file=sys.stderr)
        return False
    write_task_logs(log_path.read_text(), WORK / "airflow" / "logs", dag_id)
    return True


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
    if pid := ui_is_running():
        print(
            f"`make ui` (pid {pid}) is using .demo/; a new demo would delete its database.\n"
            "Stop it first (Ctrl-C in its terminal), then run make demo again.",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(WORK, ignore_errors=True)
    home = WORK / "airflow"
    home.mkdir(parents=True)
    warehouse = WORK / "warehouse.db"
    logical_date = datetime.now(timezone.utc).replace(microsecond=0)  # its data interval: yesterday
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",  # even if the shell sets another
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    print("1/6 preparing Airflow's metadata database ...", flush=True)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "tiktok_api", "4", "TikTok Marketing API budget (50 req/s shared)")
    warehouse_conn = json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
    airflow(env, "connections", "add", "tiktok_warehouse", "--conn-json", warehouse_conn)  # for the UI
    env["AIRFLOW_CONN_TIKTOK_WAREHOUSE"] = warehouse_conn  # and the same as env vars, which `dags test` reads
    print(
        f"2/6 seeding {args.entrants:,} synthetic entrants and their loyalty members into {shown(warehouse)} ...",
        flush=True,
    )
    seed(f"sqlite:///{warehouse}", args.entrants, days=1, start=latest_interval_end(logical_date) - timedelta(days=1))
    print(
        f"3/6 starting the TikTok emulator on 127.0.0.1:{args.port}, ad accounts {OWNER} and {PARTNER} ...", flush=True
    )
    emulator = demo_emulator(WORK, args.port)
    with emulator as sandbox:
        airflow(env, "connections", "add", "tiktok_default", "--conn-json", sandbox.connection_json())
        env["AIRFLOW_CONN_TIKTOK_DEFAULT"] = sandbox.connection_json()
        airflow(env, "dags", "reserialize")  # every DAG unpaused, for `make ui`
        if not dags_test(env, "4/6", DAG_ID, logical_date, WORK / "dag-test.log"):
            return 1
        print("\nPer-step metrics, read back from the results table:\n")
        print(metrics_table(warehouse))
        audiences = sandbox.stats()["audiences"].values()
        print("\nAudiences in the emulator: " + ", ".join(f"{a['name']} ({a['members']} members)" for a in audiences))
        # TikTok takes hours to calculate a new audience and the DAG's sensor looks every 60 s; here the seed
        # counts as calculated at once, so the sensor passes on its first look (valid, size >= 1,000).
        sandbox.set_faults(valid_after_seconds=0)
        print()
        if not dags_test(env, "5/6", LOOKALIKE_DAG_ID, logical_date, WORK / "vip-lookalike.log"):
            return 1
        print("6/6 the VIP seed and its lookalike, read back from the results table, XCom and the emulator:\n")
        print(metrics_table(warehouse, dag_id=LOOKALIKE_DAG_ID) + "\n")
        print(lookalike_lines(home / "airflow.db", sandbox))
    print("\nNext: `make ui` opens both runs, their logs and the TikTok audiences page in the Airflow UI.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
