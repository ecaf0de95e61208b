"""After ``make demo``: ``make ui`` opens the demo's run in the Airflow UI (``python -m demo.ui``).

Starts the TikTok emulator again on the demo's port and state (the connections stored in the demo's metadata
database point at it), then Airflow on the demo's home: API server, scheduler, DAG processor and triggerer,
with a fixed local login. Prints the URL of the "TikTok audiences" page; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from airflow_provider_tiktok.sandbox.__main__ import port_is_free
from airflow_provider_tiktok.sandbox.process import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
HOME = WORK / "airflow"
PIDFILE = WORK / "ui.pid"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
LOGIN = ("admin", "admin")
RESULTS_SOURCES = "tiktok_warehouse:tiktok_audience_sync_results"
COMPONENTS = ("scheduler", "dag-processor", "triggerer")
OWNER, PARTNER = "7000000000001", "7000000000002"  # PARTNER: the lookalike DAG's default second ad account
PLUGIN_SHIM = '''"""Loads the TikTok UI plugin when the installed package does not register it by entry point."""

from importlib.metadata import entry_points

if not any(ep.value.startswith("airflow_provider_tiktok.plugins") for ep in entry_points(group="airflow.plugins")):
    from airflow_provider_tiktok.plugins import TikTokAudiencesPlugin  # noqa: F401
'''


def demo_emulator(work: Path, port: int) -> SandboxProcess:
    """The emulator of ``make demo`` and ``make ui`` alike: two ad accounts of one Business Center, so the
    lookalike DAG can share with the second, whichever of the two runs it."""
    return SandboxProcess(
        work / "sandbox.db",
        port=port,
        advertiser_ids=[OWNER, PARTNER],
        business_center=[f"{OWNER},{PARTNER}"],
        valid_after_seconds=5,
    )


def prepare_home(home: Path, login: tuple[str, str] = LOGIN) -> None:
    """A fixed SimpleAuthManager login, and the UI plugin in the home's plugins folder."""
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    (home / "plugins" / "tiktok_ui_plugin.py").write_text(PLUGIN_SHIM)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({login[0]: login[1]}))
    passwords.chmod(0o600)


def ui_env(home: Path, port: int, results_sources: str, login: tuple[str, str] = LOGIN) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{login[0]}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__TIKTOK__RESULTS_SOURCES": results_sources,
    }


def wait_until_healthy(base_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/api/v2/monitor/health", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"The Airflow API server did not answer on {base_url} within {timeout:.0f}s")


def ui_is_running() -> int | None:
    """The pid of a ``make ui`` still using ``.demo/``, if any."""
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("TIKTOK_UI_PORT", "8080")))
    parser.add_argument("--emulator-port", type=int, default=int(os.environ.get("TIKTOK_DEMO_PORT", "8765")))
    args = parser.parse_args(argv)
    if not (HOME / "airflow.db").exists():
        print("No demo to show yet: run `make demo` first.", file=sys.stderr)
        return 2
    if pid := ui_is_running():
        print(f"`make ui` is already running (pid {pid}). Stop it with Ctrl-C in its terminal.", file=sys.stderr)
        return 2
    for port, what in ((args.port, "Airflow UI"), (args.emulator_port, "TikTok emulator")):
        if not port_is_free("127.0.0.1", port):
            print(f"Port {port} on 127.0.0.1 is taken, so the {what} cannot start.", file=sys.stderr)
            return 2
    prepare_home(HOME)
    env = ui_env(HOME, args.port, RESULTS_SOURCES)
    base_url = f"http://127.0.0.1:{args.port}"
    PIDFILE.write_text(str(os.getpid()))
    processes: list[subprocess.Popen] = []
    try:
        with (
            demo_emulator(WORK, args.emulator_port),
            open(WORK / "ui.log", "w") as log,
        ):
            api = [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(args.port)]
            processes.append(subprocess.Popen(api, env=env, stdout=log, stderr=log))
            wait_until_healthy(base_url)  # first: tasks the scheduler starts report to its execution API
            for component in COMPONENTS:
                processes.append(subprocess.Popen([AIRFLOW, component], env=env, stdout=log, stderr=log))
            print(
                f"\nAirflow UI:          {base_url}/   (login {LOGIN[0]} / {LOGIN[1]}, local only)\n"
                f"TikTok audiences:    {base_url}/plugin/tiktok-audiences\n"
                f"The demo run:        {base_url}/dags/tiktok_canvas_audience_sync\n"
                f"TikTok emulator:     http://127.0.0.1:{args.emulator_port}/   (log: .demo/ui.log)\n"
                "Ctrl-C stops it all.",
                flush=True,
            )
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            while all(process.poll() is None for process in processes):
                time.sleep(1)
            print("An Airflow component stopped; the end of .demo/ui.log says why.", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        PIDFILE.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
