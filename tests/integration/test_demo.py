"""``make demo`` end to end, in a temporary ``.demo/``: both DAGs run against the emulator, and the VIP
lookalike ends up in the emulator, seeded from the synced VIPs and shared with the second ad account."""

from __future__ import annotations

import sqlite3

import demo.run
import demo.ui
from airflow_provider_tiktok.sandbox.process import SandboxProcess, free_port
from demo.run import LOOKALIKE_DAG_ID, OWNER, PARTNER


def test_the_demo_also_runs_the_vip_lookalike_dag_and_shares_the_lookalike(tmp_path, monkeypatch, capsys):
    work = tmp_path / "demo"
    monkeypatch.setattr(demo.run, "WORK", work)
    monkeypatch.setattr(demo.ui, "PIDFILE", tmp_path / "ui.pid")  # a `make ui` of the real .demo/ is not ours

    assert demo.run.main(["--port", str(free_port()), "--entrants", "8000"]) == 0
    printed = capsys.readouterr().out

    with sqlite3.connect(work / "warehouse.db") as db:
        active_vips = db.execute("SELECT COUNT(*) FROM loyalty_members WHERE status = 'active'").fetchone()[0]
        [(entered, synced)] = db.execute(
            "SELECT entered, synced FROM tiktok_audience_sync_results WHERE dag_id = ?", (LOOKALIKE_DAG_ID,)
        ).fetchall()
    with SandboxProcess(work / "sandbox.db", advertiser_ids=[OWNER, PARTNER]) as emulator:  # the demo's state
        audiences = emulator.stats()["audiences"]
        ids = {audience["name"]: audience_id for audience_id, audience in audiences.items()}
        seed_id, lookalike_id = ids["Loyalty - VIP seed"], ids["Loyalty - VIP lookalike (US, balanced)"]
        lookalike = emulator.audience(lookalike_id)

    assert entered == active_vips and audiences[seed_id]["members"] == synced >= 1_000
    assert lookalike["kind"] == "lookalike" and lookalike["advertiser_id"] == OWNER
    assert lookalike["lookalike_spec"]["source_audience_id"] == seed_id
    assert lookalike["shared_with"] == [PARTNER]
    assert f"(emulator: shared with {PARTNER})" in printed and f"({lookalike_id}): size" in printed
    run_logs = work / "airflow" / "logs" / f"dag_id={LOOKALIKE_DAG_ID}"
    assert sorted(log.parent.name for log in run_logs.glob("run_id=*/task_id=*/attempt=1.log")) == [
        "task_id=create_vip_lookalike",
        "task_id=share_vip_lookalike",
        "task_id=sync_vip_seed",
        "task_id=wait_for_vip_seed",
    ]
