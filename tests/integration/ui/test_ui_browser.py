"""The "TikTok audiences" page in a real browser, served by the real ``airflow api-server``.

A temporary Airflow home with a SQLite warehouse holding a results table, the emulator answering sizes,
headless Debian Chromium logging in through Airflow's own login page. The page's numbers must equal the
table's; the plugin's JSON must refuse anyone not signed in; a row of a DAG the user may not read (here:
one Airflow does not know) never shows. The screenshot is kept in tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.sandbox.process import free_port
from demo.ui import prepare_home, ui_env, wait_until_healthy
from tests.unit.plugins.factory import TABLE, result_row, write_sqlite

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DAG_ID = "tiktok_canvas_audience_sync"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DAG_FILE = f"""
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("{DAG_ID}", schedule=None, tags=["tiktok"]):
    EmptyOperator(task_id="sync_step")
"""
ADVERTISER = "7000000000001"  # the emulator's default ad account; the factory's rows name it too
AUDIENCES = ["Winback - step 1", "Winback - step 2", "Onboarding - new users", "Loyalty - VIP lookalike seed"]


@pytest.fixture
def ui_server(tmp_path, start_sandbox):
    """The real API server on a fresh home: one DAG, a warehouse with 4 audiences x 14 daily syncs."""
    sandbox = start_sandbox(valid_after_seconds=0)
    assert sandbox.advertiser_id == ADVERTISER
    tiktok = TikTokHook.for_base_url(sandbox.base_url, sandbox.access_token)
    ids = [tiktok.create_audience(sandbox.advertiser_id, name) for name in AUDIENCES]
    rows = []
    for number, (audience_id, name) in enumerate(zip(ids, AUDIENCES, strict=True)):
        for day in range(14):
            row = result_row(number, day)
            rows.append({**row, "audience_id": audience_id, "audience_name": name})
    hidden = {**result_row(9, 13, dag_id="a_dag_airflow_does_not_know"), "audience_name": "Hidden audience"}
    warehouse = tmp_path / "warehouse.db"
    write_sqlite(warehouse, [*rows, hidden])

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "sync_dag.py").write_text(DAG_FILE)
    prepare_home(home)
    port = free_port()
    env = {
        **ui_env(home, port, "warehouse"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__TIKTOK__UI_TIKTOK_CONN_ID": "tiktok_default",
        "AIRFLOW_CONN_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
        "AIRFLOW_CONN_TIKTOK_DEFAULT": sandbox.connection_json(),
    }
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run([AIRFLOW, *command], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    log = open(tmp_path / "api-server.log", "w")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen([AIRFLOW, "api-server", "--port", str(port)], env=env, stdout=log, stderr=log)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", warehouse
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1500,1000",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def log_in(driver, base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/")
    wait = WebDriverWait(driver, 60)
    wait.until(expected_conditions.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys("admin")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url and d.get_cookie("_token"))


def latest_from_table(warehouse: Path) -> dict[str, tuple[int, ...]]:
    with sqlite3.connect(warehouse) as db:
        found = db.execute(
            "SELECT audience_name, entered, synced, not_synced, pending, errored, removed, unchanged "
            f"FROM {TABLE} t WHERE dag_id = ? AND updated_at = "
            f"(SELECT MAX(updated_at) FROM {TABLE} s WHERE s.audience_id = t.audience_id)",
            (DAG_ID,),
        ).fetchall()
    return {name: tuple(values) for name, *values in found}


def test_page_shows_the_results_table_to_a_signed_in_user_only(ui_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base_url, warehouse = ui_server
    refused = requests.get(f"{base_url}/tiktok/api/audiences", timeout=10)
    assert refused.status_code in (401, 403)
    assert requests.get(f"{base_url}/tiktok/audiences", timeout=10).status_code in (401, 403)
    forged = requests.get(f"{base_url}/tiktok/api/audiences", headers={"Authorization": "Bearer x.y.z"}, timeout=10)
    assert forged.status_code in (401, 403)

    expected = latest_from_table(warehouse)
    assert len(expected) == 4
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser()
    try:
        log_in(driver, base_url)
        driver.get(f"{base_url}/plugin/tiktok-audiences")  # the page inside Airflow's navigation
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "iframe"))
        driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.grid tbody tr"))
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table.grid thead th")]
        columns = ["Entered", "Synced", "Not Synced", "Pending", "Errored", "Removed", "Unchanged"]
        positions = [headers.index(name) for name in columns]
        shown = {}
        for tr in driver.find_elements(By.CSS_SELECTOR, "table.grid tbody tr"):
            cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            name = cells[0].splitlines()[0]
            shown[name] = tuple(int(cells[i].replace(",", "")) for i in positions)
        assert shown == expected  # the hidden DAG's audience is not among them
        WebDriverWait(driver, 30).until(
            lambda d: all(td.text.strip().isdigit() for td in d.find_elements(By.CSS_SELECTOR, "td[data-size]"))
        )  # TikTok's sizes arrived from the emulator without a reload
        assert "Hidden audience" not in driver.page_source
        ads_manager = driver.find_element(By.PARTIAL_LINK_TEXT, "Ads Manager").get_attribute("href")
        assert ads_manager.startswith("https://ads.tiktok.com/") and f"aadvid={ADVERTISER}" in ads_manager
        driver.switch_to.default_content()
        driver.save_screenshot(str(ARTIFACTS / "ui-audiences.png"))

        driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
        driver.find_elements(By.LINK_TEXT, "Task")[0].click()  # navigates Airflow's UI, not the frame
        driver.switch_to.default_content()
        WebDriverWait(driver, 30).until(lambda d: "/tasks/sync_step/mapped/" in d.current_url)
        assert "/plugin/" not in driver.current_url

        run_id = result_row(0, 13)["run_id"]
        driver.get(f"{base_url}/tiktok/runs/{DAG_ID}/{run_id}")  # what the "TikTok sync" run tab shows
        figures = driver.find_elements(By.CSS_SELECTOR, "section .card .value")
        shown_run = [int(f.text.replace(",", "")) for f in figures]
        assert shown_run == [v for name in AUDIENCES for v in expected[name]][: len(shown_run)]
        assert len(shown_run) == 4 * 7

        driver.get(f"{base_url}/tiktok/audiences")
        driver.find_element(By.LINK_TEXT, "Winback - step 1").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart polyline"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline")) == 7
        assert "python -m airflow_provider_tiktok.oauth" in driver.page_source  # day 13: token errors, with advice
        driver.save_screenshot(str(ARTIFACTS / "ui-audience.png"))

        token = driver.get_cookie("_token")["value"]
        as_user = requests.get(f"{base_url}/tiktok/api/audiences", cookies={"_token": token}, timeout=10)
        assert as_user.status_code == 200
        assert {a["audience_name"] for a in as_user.json()["audiences"]} == set(expected)
        assert os.environ.get("AIRFLOW_CONN_TIKTOK_DEFAULT") is None or "password" not in as_user.text
        assert "sandbox-access-token" not in as_user.text and "sandbox-access-token" not in driver.page_source
    finally:
        driver.quit()
