"""A real Redis server for the shared-store tests of this package."""

from __future__ import annotations

import json

import pytest

from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from tests.integration.redis_server import RedisServer

BASE = "https://api.example.test/open_api/v1.3/"


def quick_retry_hook(monkeypatch: pytest.MonkeyPatch, advertiser_id: str) -> TikTokHook:
    """A hook on connection ``tiktok_test`` (``BASE``, token ``tok``) that retries in milliseconds."""
    connection = {"conn_type": "tiktok", "host": BASE, "password": "tok", "extra": {"advertiser_id": advertiser_id}}
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_TEST", json.dumps(connection))
    return TikTokHook("tiktok_test", request_retry_min_wait=0.001, request_retry_max_wait=0.002, request_retry_limit=3)


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server
