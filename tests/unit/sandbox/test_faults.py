"""Fault settings change all at once or not at all, and drops come in the kinds asked for."""

from __future__ import annotations

import time

import pytest

from airflow_provider_tiktok.sandbox.faults import FaultInjector, Faults, ResetResponse, TruncatedResponse


def test_update_applies_every_value_and_converts_rates():
    faults = Faults()
    faults.update({"latency_ms": "250", "drop_connection_rate": 0.2, "drop_mode": "before_response"})
    assert (faults.latency_ms, faults.drop_connection_rate, faults.drop_mode) == (250.0, 0.2, "before_response")


@pytest.mark.parametrize("values", [{"latency_ms": 5, "explode": 1}, {"latency_ms": 5, "drop_mode": "sideways"}])
def test_a_bad_update_changes_nothing(values):
    faults = Faults()
    with pytest.raises(ValueError):
        faults.update(values)
    assert faults == Faults()


def test_rate_limit_for_seconds_sets_a_deadline():
    faults = Faults()
    faults.update({"rate_limit_for_seconds": 60})
    assert 59 < faults.rate_limited_until - time.time() <= 60


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        ("mid_body", {TruncatedResponse}),
        ("before_response", {ResetResponse}),
        ("mixed", {TruncatedResponse, ResetResponse}),
    ],
)
def test_drops_come_in_the_kinds_the_mode_names(mode, kinds):
    injector = FaultInjector(Faults(drop_connection_rate=1.0, drop_mode=mode), seed=1)
    assert {type(injector.drop(b'{"code": 0}')) for _ in range(40)} == kinds


def test_no_drop_at_rate_zero():
    injector = FaultInjector(Faults(), seed=1)
    assert all(injector.drop(b"{}") is None for _ in range(100))


def test_a_mid_body_drop_promises_the_whole_answer_and_holds_half():
    dropped = FaultInjector(Faults(drop_connection_rate=1.0), seed=1).drop(b"0123456789")
    assert isinstance(dropped, TruncatedResponse) and dropped.answer == b"0123456789"
