"""The installed distribution registers itself with Airflow (a fresh AIRFLOW_HOME, the real CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_cli(tmp_path, *args):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_providers_list_and_hooks_show_the_tiktok_provider(tmp_path):
    assert "airflow-provider-tiktok" in airflow_cli(tmp_path, "providers", "list", "-o", "plain")
    hooks = airflow_cli(tmp_path, "providers", "hooks", "-o", "plain")
    line = next(line for line in hooks.splitlines() if line.startswith("tiktok"))
    assert "airflow_provider_tiktok.hooks.tiktok.TikTokHook" in line
    assert "tiktok_conn_id" in line


def test_connection_form_declares_custom_fields_and_relabels():
    from airflow_provider_tiktok.get_provider_info import get_provider_info
    from airflow_provider_tiktok.hooks.tiktok import TikTokHook

    [conn_type] = get_provider_info()["connection-types"]
    assert set(conn_type["conn-fields"]) == {"app_id", "secret", "advertiser_id", "ca_bundle"}
    assert conn_type["conn-fields"]["secret"]["schema"]["format"] == "password"
    assert conn_type["ui-field-behaviour"]["relabeling"] == {
        "host": "API base URL",
        "password": "Access token",
    }
    legacy = TikTokHook.get_ui_field_behaviour()
    assert legacy["relabeling"] == conn_type["ui-field-behaviour"]["relabeling"]
    assert set(legacy["hidden_fields"]) == set(conn_type["ui-field-behaviour"]["hidden-fields"])
