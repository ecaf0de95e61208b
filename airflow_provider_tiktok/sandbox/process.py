"""Run the emulator as a child process on a free loopback port, and talk to its admin routes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import requests

from airflow_provider_tiktok.sandbox.__main__ import DEFAULT_ADVERTISER, DEFAULT_APP_ID, DEFAULT_SECRET


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class SandboxProcess:
    """``with SandboxProcess(state_path) as sandbox:`` starts the server and stops it on exit.

    ``options`` become CLI flags (``mapping_mode="sink"`` -> ``--mapping-mode sink``; a list repeats the
    flag, e.g. ``business_center=["1,2", "3"]``).
    """

    def __init__(
        self,
        state_path: str | Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        advertiser_ids: list[str] | None = None,
        startup_timeout: float = 60.0,
        **options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.state_path = Path(state_path)
        self.advertiser_ids = advertiser_ids or [DEFAULT_ADVERTISER]
        self.app_id, self.app_secret = DEFAULT_APP_ID, DEFAULT_SECRET
        self.options = options
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.access_token = ""
        self.admin = requests.Session()
        self.log: deque[str] = deque(maxlen=200)  # the server's last stderr lines
        self._log_reader: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/open_api/v1.3/"

    @property
    def advertiser_id(self) -> str:
        return self.advertiser_ids[0]

    def start(self) -> SandboxProcess:
        command = [
            sys.executable,
            "-m",
            "airflow_provider_tiktok.sandbox",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--state",
            str(self.state_path),
        ]
        for advertiser in self.advertiser_ids:
            command += ["--advertiser-id", advertiser]
        for name, value in self.options.items():
            for item in value if isinstance(value, list | tuple) else [value]:
                command += [f"--{name.replace('_', '-')}", str(item)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
        )
        banner = self.process.stdout.readline() if self.process.stdout else ""
        if not banner:
            self.process.wait(timeout=10)
            raise RuntimeError(f"emulator did not start: {self.process.stderr.read() if self.process.stderr else ''}")
        self.access_token = json.loads(banner)["access_token"]
        # Keep reading the server's log: a pipe nobody reads fills up and then blocks the server.
        self._log_reader = threading.Thread(target=self._drain_log, daemon=True, name=f"sandbox-log-{self.port}")
        self._log_reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                self.admin.get(f"{self.root_url}/_sandbox/faults", timeout=1).raise_for_status()
                return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"emulator on port {self.port} did not answer within {self.startup_timeout}s")

    def _drain_log(self) -> None:
        stream = self.process.stderr if self.process else None
        for line in stream or ():
            self.log.append(line)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_reader is not None:
            self._log_reader.join(timeout=10)  # it ends at the log's end, before the stream is closed
        for stream in (self.process.stdout, self.process.stderr) if self.process else ():
            if stream:
                stream.close()
        self.admin.close()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- admin routes (emulator only) ------------------------------------------------------

    def set_faults(self, **faults: Any) -> dict:
        response = self.admin.post(f"{self.root_url}/_sandbox/faults", json=faults, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.admin.get(f"{self.root_url}/_sandbox/stats", timeout=10).json()

    def reset_stats(self) -> None:
        self.admin.post(f"{self.root_url}/_sandbox/stats/reset", timeout=10).raise_for_status()

    def revoke(self, token: str | None = None) -> bool:
        url = f"{self.root_url}/_sandbox/tokens/{token or self.access_token}/revoke"
        return self.admin.post(url, timeout=10).json()["revoked"]

    def issue_auth_code(self) -> str:
        body = {"app_id": self.app_id, "advertiser_ids": self.advertiser_ids}
        return self.admin.post(f"{self.root_url}/_sandbox/auth_codes", json=body, timeout=10).json()["auth_code"]

    def members(self, audience_id: str) -> list[str]:
        response = self.admin.get(f"{self.root_url}/_sandbox/audiences/{audience_id}/members", timeout=60)
        response.raise_for_status()
        return response.json()

    def received(self, endpoint: str | None = None) -> list[dict]:
        """The last API requests the emulator received (``GET /_sandbox/requests``), oldest first."""
        params = {"endpoint": endpoint} if endpoint else {}
        response = self.admin.get(f"{self.root_url}/_sandbox/requests", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def audience(self, audience_id: str) -> dict:
        """Kind, size, sharing and ad groups of one audience (``GET /_sandbox/audiences/{id}``)."""
        response = self.admin.get(f"{self.root_url}/_sandbox/audiences/{audience_id}", timeout=10)
        response.raise_for_status()
        return response.json()

    def set_adgroup(self, adgroup_id: str, status: str = "ENABLE", advertiser_id: str | None = None) -> dict:
        """Create or pause (``DISABLE``) an ad group audiences can be applied to."""
        body = {"advertiser_id": advertiser_id or self.advertiser_id, "status": status}
        response = self.admin.post(f"{self.root_url}/_sandbox/adgroups/{adgroup_id}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def connection_json(self, **extra: Any) -> str:
        """A ``tiktok`` connection pointing at this emulator, for ``AIRFLOW_CONN_<ID>``."""
        extras = {
            "app_id": self.app_id,
            "secret": self.app_secret,
            "advertiser_id": self.advertiser_id,
            **extra,
        }
        return json.dumps(
            {"conn_type": "tiktok", "host": self.base_url, "password": self.access_token, "extra": extras}
        )
