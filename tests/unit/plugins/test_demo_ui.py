"""The demo's hand-off to the UI: task logs where the API server reads them, and no DB pulled from under it."""

from __future__ import annotations

import os

import demo.run
import demo.ui
from demo.run import write_task_logs

DAG_TEST_OUTPUT = """\
2026-11-26T06:56:10Z [info] DAG bundles loaded
2026-11-26T06:56:18Z [info] [DAG TEST] starting task_id=launch_validation map_index=-1 [dag]
2026-11-26T06:56:19Z [info] validated
2026-11-26T06:56:27Z [info] [DAG TEST] end task task_id=launch_validation map_index=-1 [dag]
2026-11-26T06:56:28Z [info] [DAG TEST] starting task_id=sync_step map_index=3 [dag]
2026-11-26T06:56:29Z [info] Sync metrics: entered=10 synced=9
2026-11-26T06:56:29Z [info] [DAG TEST] end task task_id=sync_step map_index=3 [dag]
2026-11-26T06:56:32Z [info] DagRun Finished: dag_id=d, run_id=manual__2026-11-26T06:56:17+00:00, state=success
"""


def test_dags_test_output_becomes_one_log_file_per_task_in_airflows_layout(tmp_path):
    written = write_task_logs(DAG_TEST_OUTPUT, tmp_path, "d")
    run = tmp_path / "dag_id=d" / "run_id=manual__2026-11-26T06:56:17+00:00"
    assert written == [
        run / "task_id=launch_validation" / "attempt=1.log",
        run / "task_id=sync_step" / "map_index=3" / "attempt=1.log",
    ]
    assert written[1].read_text().splitlines()[1].endswith("Sync metrics: entered=10 synced=9")
    assert "validated" not in written[1].read_text()


def test_make_demo_refuses_to_delete_the_database_a_running_ui_uses(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo.ui, "PIDFILE", tmp_path / "ui.pid")
    monkeypatch.setattr(demo.run, "WORK", tmp_path / "work")
    (tmp_path / "ui.pid").write_text(str(os.getpid()))
    (tmp_path / "work").mkdir()
    assert demo.run.main(["--port", "0"]) == 2
    assert "make ui" in capsys.readouterr().err and (tmp_path / "work").exists()


def test_make_ui_without_a_demo_says_to_run_it_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo.ui, "HOME", tmp_path / "nothing")
    assert demo.ui.main([]) == 2
    assert "make demo" in capsys.readouterr().err
