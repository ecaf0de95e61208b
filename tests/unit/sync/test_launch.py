"""Launch checks beside the source read: waited for where needed, and a refusal stops the read."""

from __future__ import annotations

import itertools
import threading

import pytest

from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.sync.launch import LaunchChecks


def test_chunks_flow_while_the_checks_run_and_the_read_ends_only_once_they_passed():
    release, passed = threading.Event(), threading.Event()

    def checks() -> None:
        release.wait(5)
        passed.set()

    launch = LaunchChecks(checks)
    chunks = launch.guard(iter(range(3)))
    assert [next(chunks) for _ in range(3)] == [0, 1, 2]  # read on while the calls are in flight
    assert not passed.is_set()
    threading.Timer(0.2, release.set).start()
    assert list(chunks) == [] and passed.is_set()  # the end of the read waited for them


def test_a_refusal_stops_an_endless_read_at_its_next_chunk_and_wait_raises_it():
    def checks() -> None:
        raise TikTokConfigurationError("Audience 'x' does not exist for advertiser 7")

    launch = LaunchChecks(checks)
    read: list[int] = []
    with pytest.raises(TikTokConfigurationError, match="does not exist"):
        for chunk in launch.guard(itertools.count()):
            read.append(chunk)
            threading.Event().wait(0.01)
    assert len(read) < 100
    with pytest.raises(TikTokConfigurationError):
        launch.wait()


def test_a_read_that_fails_waits_for_the_checks_and_a_refusal_replaces_its_error():
    started = threading.Event()

    def refused() -> None:
        started.wait(5)
        raise TikTokConfigurationError("advertiser 7 is not authorised for this token")

    def broken_read():
        yield 1
        started.set()
        raise OSError("disk I/O error")

    with pytest.raises(TikTokConfigurationError, match="not authorised") as caught:
        list(LaunchChecks(refused).guard(broken_read()))
    assert isinstance(caught.value.__context__, OSError)
    with pytest.raises(OSError):  # checks that pass leave the read's own error
        list(LaunchChecks(lambda: None).guard(broken_read()))
