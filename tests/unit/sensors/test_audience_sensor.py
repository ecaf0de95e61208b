"""Sensor pokes, trigger serialisation and trigger events, for each condition and error class."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_tiktok.audience.readiness import AudienceConditions, evaluate
from airflow_provider_tiktok.exceptions import (
    TikTokPermissionError,
    TikTokRateLimitError,
    TikTokTokenError,
    TikTokTransientError,
)
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.sensors.tiktok import TikTokAudienceSensor
from airflow_provider_tiktok.triggers.tiktok import TikTokAudienceTrigger

READY = {"audience_id": "71", "name": "VIP", "cover_num": 1500, "is_valid": True, "is_expiring": False}


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TIKTOK_DEFAULT",
        json.dumps(
            {
                "conn_type": "tiktok",
                "host": "https://api.example.test/",
                "password": "t",
                "extra": {"advertiser_id": "7001"},
            }
        ),
    )


def answer(monkeypatch, *results):
    """Make afind_audience return (or raise) each result in turn."""
    queue = list(results)
    calls = []

    async def fake(self, advertiser_id, *, audience_id=None, audience_name=None):
        calls.append((advertiser_id, audience_id, audience_name))
        result = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(TikTokHook, "afind_audience", fake)
    return calls


def sensor(**kwargs) -> TikTokAudienceSensor:
    return TikTokAudienceSensor(task_id="wait", audience_name="VIP", **kwargs)


@pytest.mark.parametrize(
    ("audience", "conditions", "met", "failure"),
    [
        (None, AudienceConditions(), False, None),
        (None, AudienceConditions(fail_if_missing=True), False, "does not exist"),
        ({**READY, "is_valid": False}, AudienceConditions(), False, None),
        ({**READY, "is_valid": False}, AudienceConditions(require_valid=False), True, None),
        (READY, AudienceConditions(min_size=2000), False, None),
        (READY, AudienceConditions(min_size=1500), True, None),
        ({**READY, "is_expiring": True}, AudienceConditions(fail_if_expiring=True), False, "expiring"),
    ],
)
def test_readiness_conditions(audience, conditions, met, failure):
    result = evaluate(audience, conditions, "'VIP'")
    assert result.met is met
    assert (failure is None and result.failure is None) or failure in result.failure


def test_poke_succeeds_with_the_audience_details_for_xcom(monkeypatch):
    calls = answer(monkeypatch, READY)
    result = sensor(min_size=1000).poke({})
    assert isinstance(result, PokeReturnValue) and result.is_done
    assert result.xcom_value == {
        "audience_id": "71",
        "name": "VIP",
        "size": 1500,
        "is_valid": True,
        "is_expiring": False,
        "expired_time": None,
    }
    assert calls == [("7001", None, "VIP")]


def test_poke_waits_while_calculating_or_too_small(monkeypatch):
    answer(monkeypatch, {**READY, "is_valid": False})
    assert sensor().poke({}) is False
    answer(monkeypatch, READY)
    assert sensor(min_size=5000).poke({}) is False


@pytest.mark.parametrize("error", [TikTokRateLimitError(40100, "slow"), TikTokTransientError(50000, "busy")])
def test_rate_limit_and_transient_errors_mean_not_yet(monkeypatch, error):
    answer(monkeypatch, error)
    assert sensor().poke({}) is False


@pytest.mark.parametrize("error", [TikTokTokenError(40105, "revoked"), TikTokPermissionError(40001, "no")])
def test_token_and_permission_errors_fail_at_once(monkeypatch, error):
    answer(monkeypatch, error)
    with pytest.raises(AirflowFailException, match=str(error.code)):
        sensor().poke({})


def test_unknown_audience_id_is_deleted_and_fails_at_once(monkeypatch):
    answer(monkeypatch, None)
    with pytest.raises(AirflowFailException, match="does not exist"):
        TikTokAudienceSensor(task_id="wait", audience_id="999").poke({})
    assert sensor().poke({}) is False  # a name may still be created later


def test_missing_audience_fails_when_asked(monkeypatch):
    answer(monkeypatch, None)
    with pytest.raises(AirflowFailException, match="does not exist"):
        sensor(fail_if_missing=True).poke({})


def trigger(**conditions) -> TikTokAudienceTrigger:
    return TikTokAudienceTrigger(
        "tiktok_default", "7001", audience_name="VIP", conditions=conditions, poke_interval=0.01
    )


def test_trigger_serialises_to_a_round_trip():
    original = trigger(min_size=10, fail_if_expiring=True)
    path, kwargs = original.serialize()
    assert path == "airflow_provider_tiktok.triggers.tiktok.TikTokAudienceTrigger"
    json.dumps(kwargs)  # JSON-safe
    assert TikTokAudienceTrigger(**kwargs).serialize() == (path, kwargs)


async def first_event(trigger_: TikTokAudienceTrigger):
    events = [event async for event in trigger_.run()]
    assert len(events) == 1
    return events[0].payload


def test_trigger_polls_through_not_yet_and_rate_limits_then_succeeds(monkeypatch):
    calls = answer(monkeypatch, None, TikTokRateLimitError(40100, "slow"), {**READY, "is_valid": False}, READY)
    payload = asyncio.run(first_event(trigger()))
    assert payload["status"] == "success" and payload["audience"]["size"] == 1500
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("result", "message"),
    [(TikTokTokenError(40105, "revoked"), "40105"), (RuntimeError("boom"), "boom")],
)
def test_trigger_turns_fatal_errors_into_one_error_event(monkeypatch, result, message):
    answer(monkeypatch, result)
    payload = asyncio.run(first_event(trigger()))
    assert payload["status"] == "error" and message in payload["message"]


def test_trigger_reports_a_failed_condition(monkeypatch):
    answer(monkeypatch, {**READY, "is_expiring": True})
    payload = asyncio.run(first_event(trigger(fail_if_expiring=True)))
    assert payload == {"status": "error", "message": "audience 'VIP' is expiring (expires None)"}


def test_execute_complete_returns_details_or_fails_clearly():
    assert sensor().execute_complete({}, {"status": "success", "audience": {"audience_id": "1"}}) == {
        "audience_id": "1"
    }
    # A trigger ends with an error only when waiting cannot help: it fails without retry, as a poke does.
    with pytest.raises(AirflowFailException, match="TikTok audience 'VIP': gone"):
        sensor().execute_complete({}, {"status": "error", "message": "gone"})


def test_deferrable_sensor_checks_once_before_deferring(monkeypatch):
    calls = answer(monkeypatch, READY)
    deferred = []
    monkeypatch.setattr(TikTokAudienceSensor, "defer", lambda self, **kwargs: deferred.append(kwargs))
    assert sensor(deferrable=True).execute({})["size"] == 1500
    assert len(calls) == 1 and deferred == []


def test_deferrable_sensor_defers_with_its_conditions_when_not_ready(monkeypatch):
    answer(monkeypatch, None)
    deferred = []
    monkeypatch.setattr(TikTokAudienceSensor, "defer", lambda self, **kwargs: deferred.append(kwargs))
    sensor(deferrable=True, min_size=5000, poke_interval=7).execute({})
    trigger_ = deferred[0]["trigger"]
    assert trigger_.conditions == AudienceConditions(require_valid=True, min_size=5000)
    assert trigger_.poke_interval == 7


def test_missing_audience_fails_alike_in_poke_and_deferred_modes(monkeypatch):
    answer(monkeypatch, None)
    with pytest.raises(AirflowFailException, match="does not exist"):
        sensor(fail_if_missing=True).poke({})
    payload = asyncio.run(first_event(trigger(fail_if_missing=True)))
    with pytest.raises(AirflowFailException, match="does not exist"):
        sensor(fail_if_missing=True).execute_complete({}, payload)


def test_a_trigger_stored_by_01_is_rebuilt_from_its_kwargs():
    stored = {
        "tiktok_conn_id": "tiktok_default",
        "advertiser_id": "7001",
        "audience_name": "VIP",
        "require_valid": False,
        "min_size": 10,
        "fail_if_missing": True,
        "fail_if_expiring": False,
        "poll_interval": 5.0,
    }
    rebuilt = TikTokAudienceTrigger(**stored)
    assert rebuilt.conditions == AudienceConditions(False, 10, True, False) and rebuilt.poke_interval == 5.0
