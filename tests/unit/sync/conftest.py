"""A real Redis server for the shared-store tests of this package."""

from __future__ import annotations

import pytest

from tests.integration.redis_server import RedisServer


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server
