"""Results sources: configuration, SQLite reading with extra columns, incremental refresh, failures as notices."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.plugins.sources import ResultsCache, ResultsSource, parse_sources, read_table
from tests.unit.plugins.factory import TABLE, result_row, write_sqlite


def test_sources_are_conn_ids_with_optional_tables():
    expected = [ResultsSource("wh"), ResultsSource("dwh", "analytics.results")]
    assert parse_sources(" wh , dwh:analytics.results ,") == expected
    with pytest.raises(TikTokConfigurationError):
        parse_sources("wh:results; DROP TABLE x")


def test_reads_a_sqlite_table_with_any_columns_and_only_newer_rows_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "w.db"
    write_sqlite(path, [result_row(1, 0), result_row(1, 1)])
    with sqlite3.connect(path) as db:
        db.execute(f"ALTER TABLE {TABLE} ADD COLUMN future_metric DOUBLE PRECISION")
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    rows = read_table(ResultsSource("wh"))
    assert len(rows) == 2 and "future_metric" in rows[0]
    newer = read_table(ResultsSource("wh"), since=result_row(1, 1)["updated_at"])
    assert [r["run_id"] for r in newer] == [result_row(1, 1)["run_id"]]


def test_cache_refreshes_incrementally_and_a_broken_source_becomes_a_notice():
    calls = []

    def reader(source, since):
        calls.append(since)
        if source.conn_id == "broken":
            raise RuntimeError("postgres://user:secret@host failed")
        return [result_row(1, 0)] if since is None else [{**result_row(1, 0), "synced": 1}, result_row(1, 1)]

    cache = ResultsCache(ttl=0, reader=reader, background=False)
    rows, errors = cache.rows([ResultsSource("wh")])
    assert len(rows) == 1 and errors == []
    rows, _ = cache.rows([ResultsSource("wh")])
    assert calls == [None, result_row(1, 0)["updated_at"]]
    assert sorted(r["synced"] for r in rows) == sorted([1, result_row(1, 1)["synced"]])  # upserted, not doubled
    _, errors = cache.rows([ResultsSource("broken")])
    assert len(errors) == 1 and "secret" not in errors[0] and "RuntimeError" in errors[0]


def test_after_the_first_read_pages_never_wait_for_the_warehouse():
    release = threading.Event()

    def reader(source, since):
        if since is not None:
            release.wait(10)  # a slow warehouse
        return [result_row(1, 0)] if since is None else [result_row(1, 1)]

    cache = ResultsCache(ttl=0, reader=reader)
    assert len(cache.rows([ResultsSource("wh")])[0]) == 1  # first read: waited for
    started = time.monotonic()
    assert len(cache.rows([ResultsSource("wh")])[0]) == 1  # stale rows at once, refresh in the background
    assert time.monotonic() - started < 1
    release.set()
    cache.wait_idle()
    assert len(cache.rows([ResultsSource("wh")])[0]) == 2


def test_warm_starts_the_first_read_without_waiting_and_pages_then_find_it_done():
    release = threading.Event()

    def reader(source, since):
        release.wait(10)
        return [result_row(1, 0)]

    cache = ResultsCache(reader=reader)
    started = time.monotonic()
    cache.warm([ResultsSource("wh")])
    assert time.monotonic() - started < 1
    release.set()
    assert len(cache.rows([ResultsSource("wh")])[0]) == 1  # waits for the read already under way, no second one
