"""Where the shared store comes from, how it names a token, and the audience creation lock (real Redis)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time

import pytest

from airflow_provider_tiktok.sandbox.process import free_port
from airflow_provider_tiktok.sync.coordination import creation_lock, resolve_store_url, token_fingerprint

TOKEN = "act.example-token-0123456789"
ADVERTISER = "7000000000000000001"


def test_a_token_is_named_by_a_short_fingerprint_that_does_not_reveal_it():
    fingerprint = token_fingerprint(TOKEN)
    assert fingerprint == token_fingerprint(TOKEN)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert fingerprint not in TOKEN and TOKEN not in fingerprint
    assert token_fingerprint(TOKEN + "x") != fingerprint


@pytest.fixture
def airflow_config(monkeypatch):
    """Set ``[section] key`` for this test only, through Airflow's own environment variables."""
    for name in ("AIRFLOW__TIKTOK__RATE_BUDGET_URL", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    return lambda section, key, value: monkeypatch.setenv(f"AIRFLOW__{section}__{key}".upper(), value)


@pytest.mark.parametrize(
    ("extras", "settings", "expected"),
    [
        ({}, {}, None),
        ({"rate_budget_url": "redis://budget:6379/2"}, {}, "redis://budget:6379/2"),
        (
            {"rate_budget_url": "redis://from-connection:6379/0"},
            {("tiktok", "rate_budget_url"): "redis://from-config:6379/0"},
            "redis://from-connection:6379/0",
        ),
        ({}, {("tiktok", "rate_budget_url"): "redis://from-config:6379/0"}, "redis://from-config:6379/0"),
        (
            {},
            {("core", "executor"): "CeleryExecutor", ("celery", "broker_url"): "redis://broker:6379/0"},
            "redis://broker:6379/0",
        ),
        (
            {},
            {
                ("core", "executor"): "CeleryExecutor",
                ("celery", "broker_url"): "redis://broker:6379/0",
                ("tiktok", "rate_budget_url"): "redis://from-config:6379/3",
            },
            "redis://from-config:6379/3",
        ),
        (  # an explicit "none" turns the store off even when the broker is Redis
            {"rate_budget_url": "none"},
            {("core", "executor"): "CeleryExecutor", ("celery", "broker_url"): "redis://broker:6379/0"},
            None,
        ),
        ({}, {("core", "executor"): "CeleryExecutor", ("celery", "broker_url"): "amqp://rabbit:5672//"}, None),
        ({}, {("celery", "broker_url"): "redis://broker:6379/0"}, None),  # no Celery executor: not its broker
        ({"rate_budget_url": "memcached://cache:11211"}, {}, None),
    ],
)
def test_the_store_is_the_explicit_setting_else_a_redis_celery_broker_else_none(
    airflow_config, extras, settings, expected
):
    for (section, key), value in settings.items():
        airflow_config(section, key, value)
    assert resolve_store_url(extras) == expected


def test_without_a_store_the_creation_lock_runs_the_block_unlocked():
    with creation_lock(None, TOKEN, ADVERTISER, "Buyers") as held:
        assert held is False


def test_an_unreachable_store_never_stops_the_creation(caplog):
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING),
        creation_lock(f"redis://127.0.0.1:{free_port()}/0", TOKEN, ADVERTISER, "Buyers") as held,
    ):
        assert held is False
    assert time.monotonic() - started < 5
    assert "Audience creation lock unavailable (ConnectionError)" in caplog.text


def _find_or_create(store_url: str, audiences, log) -> None:
    """What the operator does: find the audience by name, create it if missing, inside the lock."""
    with creation_lock(store_url, TOKEN, ADVERTISER, "Buyers", timeout=10):
        log.put(("enter", time.time()))
        if "Buyers" not in audiences:
            time.sleep(0.2)  # the create call's round trip, during which a racer would create a twin
            audiences["Buyers"] = audiences.get("Buyers", 0) + 1
        log.put(("exit", time.time()))


def test_racing_syncs_take_turns_and_create_one_audience(redis_server):
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        audiences, log = manager.dict(), manager.Queue()
        racers = [context.Process(target=_find_or_create, args=(redis_server.url, audiences, log)) for _ in range(4)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=30)
        assert [racer.exitcode for racer in racers] == [0, 0, 0, 0]
        assert dict(audiences) == {"Buyers": 1}
        events = sorted((log.get() for _ in range(8)), key=lambda event: event[1])
    assert [kind for kind, _ in events] == ["enter", "exit"] * 4  # one holder at a time


def test_other_names_and_advertisers_do_not_wait(redis_server):
    with creation_lock(redis_server.url, TOKEN, ADVERTISER, "Buyers") as first:
        with creation_lock(redis_server.url, TOKEN, ADVERTISER, "Sellers", wait=0.1) as other_name:
            assert other_name is True
        with creation_lock(redis_server.url, TOKEN, "7000000000000000002", "Buyers", wait=0.1) as other_advertiser:
            assert other_advertiser is True
        with creation_lock(redis_server.url, TOKEN, ADVERTISER, "Buyers", wait=0.1) as same:
            assert same is False
    assert first is True


def test_a_crashed_holder_blocks_others_only_until_the_lock_times_out(redis_server):
    crashed = creation_lock(redis_server.url, TOKEN, ADVERTISER, "Buyers", timeout=0.5)
    assert crashed.__enter__() is True  # never exited: the holder died
    started = time.monotonic()
    with creation_lock(redis_server.url, TOKEN, ADVERTISER, "Buyers", timeout=5) as held:
        assert held is True
    assert 0.3 < time.monotonic() - started < 2


def test_a_holder_whose_lock_expired_finishes_without_an_error(redis_server, caplog):
    with (
        caplog.at_level(logging.WARNING),
        creation_lock(redis_server.url, TOKEN, ADVERTISER, "Buyers", timeout=0.2) as held,
    ):
        assert held is True
        time.sleep(0.4)
    assert "expired before release" in caplog.text


def test_threads_of_one_process_also_take_turns(redis_server):
    inside, most_inside, lock = 0, 0, threading.Lock()

    def racer() -> None:
        nonlocal inside, most_inside
        with creation_lock(redis_server.url, TOKEN, ADVERTISER, "Buyers", timeout=10) as held:
            assert held
            with lock:
                inside += 1
                most_inside = max(most_inside, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=racer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_inside == 1
