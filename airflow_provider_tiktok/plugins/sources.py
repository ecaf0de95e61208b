"""Where the page's numbers come from: results tables in warehouse connections, and TikTok's audience sizes.

Configured once, in Airflow's config::

    [tiktok]
    results_sources = tiktok_warehouse:tiktok_audience_sync_results, other_dwh:analytics.tiktok_results
    ui_tiktok_conn_id = tiktok_default      # empty: do not ask TikTok for sizes

(or ``AIRFLOW__TIKTOK__RESULTS_SOURCES`` / ``AIRFLOW__TIKTOK__UI_TIKTOK_CONN_ID``). Tables are read with
``SELECT *`` through the connection's common-sql hook (SQLite, PostgreSQL, ...) and kept for a few seconds;
sizes are fetched in the background through ``TikTokHook.get_audiences`` and kept for minutes, so a page
never waits on TikTok.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

log = logging.getLogger(__name__)
DEFAULT_TABLE = "tiktok_audience_sync_results"
KEY_COLUMNS = ("dag_id", "task_id", "run_id", "map_index")
SIZE_FIELDS = ("cover_num", "is_valid", "is_expiring")


@dataclass(frozen=True)
class ResultsSource:
    conn_id: str
    table: str = DEFAULT_TABLE


def parse_sources(text: str | None) -> list[ResultsSource]:
    """``conn_id[:table], ...`` -> sources; a table name that is not a plain (schema.)identifier is refused."""
    from airflow_provider_tiktok.warehouse import check_identifier

    sources = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        conn_id, _, table = (part.strip() for part in item.partition(":"))
        table = table or DEFAULT_TABLE
        check_identifier(table, "results table")
        sources.append(ResultsSource(conn_id, table))
    return sources


def configured_sources() -> list[ResultsSource]:
    from airflow.configuration import conf

    return parse_sources(conf.get("tiktok", "results_sources", fallback=""))


def read_table(source: ResultsSource, since: str | None = None) -> list[dict[str, Any]]:
    """Raw rows of one results table, whatever its columns; only those updated at or after ``since`` if given."""
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(source.conn_id).get_hook()
    sql = f"SELECT * FROM {source.table}"  # table checked by parse_sources
    with closing(hook.get_conn()) as connection:
        cursor = connection.cursor()
        try:
            if since is None:
                cursor.execute(sql)
            else:
                cursor.execute(f"{sql} WHERE updated_at >= {hook.placeholder}", (since,))
            names = [column[0].lower() for column in cursor.description]
            return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        finally:
            cursor.close()


@dataclass
class _Cached:
    rows: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    newest: str | None = None
    checked_at: float = float("-inf")
    full_read_at: float = float("-inf")
    error: str | None = None
    first_read: threading.Event = field(default_factory=threading.Event)


class ResultsCache:
    """Raw rows of every source. The first read of a source is a full one; after it, pages are answered from
    memory while a background thread fetches only rows updated since (at most every ``ttl`` seconds) and,
    every ``full_ttl``, re-reads everything to drop deleted rows. A failing source becomes a notice."""

    def __init__(
        self,
        ttl: float = 10.0,
        full_ttl: float = 600.0,
        reader: Callable[[ResultsSource, str | None], list[dict[str, Any]]] = read_table,
        background: bool = True,
    ):
        self.ttl, self.full_ttl, self.reader, self.background = ttl, full_ttl, reader, background
        self._lock = threading.Lock()
        self._cached: dict[ResultsSource, _Cached] = {}
        self._refreshing: set[ResultsSource] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiktok-results")

    def _refresh(self, source: ResultsSource, cached: _Cached) -> None:
        now = time.monotonic()
        incremental = cached.newest is not None and now - cached.full_read_at < self.full_ttl
        try:
            fresh = self.reader(source, cached.newest if incremental else None)
        except Exception as failure:  # shown as a notice; the message may carry connection details
            log.warning("Results table %s on %s unreadable: %s", source.table, source.conn_id, failure)
            cached.rows, cached.newest, cached.full_read_at = {}, None, float("-inf")
            cached.error = (
                f"Results table {source.table} on connection {source.conn_id} could not be read "
                f"({type(failure).__name__}); see the API server's log."
            )
        else:
            rows = dict(cached.rows) if incremental else {}  # swapped in whole: readers never see it half-built
            if fresh:
                rows.update(zip(map(itemgetter(*KEY_COLUMNS), fresh), fresh, strict=True))
            stamps = (str(row["updated_at"]) for row in fresh if row.get("updated_at") is not None)
            newest = max(stamps, default=None)
            if newest is not None and (cached.newest is None or newest > cached.newest):
                cached.newest = newest
            cached.rows, cached.error = rows, None
            if not incremental:
                cached.full_read_at = now
        cached.checked_at = time.monotonic()
        cached.first_read.set()
        with self._lock:
            self._refreshing.discard(source)

    def rows(self, sources: Sequence[ResultsSource]) -> tuple[list[dict[str, Any]], list[str]]:
        rows: list[dict[str, Any]] = []
        errors: list[str] = []
        for source in sources:
            with self._lock:
                cached = self._cached.setdefault(source, _Cached())
                stale = time.monotonic() - cached.checked_at > self.ttl and source not in self._refreshing
                if stale:
                    self._refreshing.add(source)
            if stale and self.background and cached.first_read.is_set():
                self._executor.submit(self._refresh, source, cached)
            elif stale:  # never read yet (or no background): this page has to wait for it
                self._refresh(source, cached)
            else:
                cached.first_read.wait(timeout=120)  # another page is reading it for the first time
            rows.extend(cached.rows.values())
            if cached.error:
                errors.append(cached.error)
        return rows, errors

    def warm(self, sources: Sequence[ResultsSource]) -> None:
        """Start the first read of sources nobody has read yet, in the background."""
        for source in sources:
            with self._lock:
                cached = self._cached.setdefault(source, _Cached())
                if cached.first_read.is_set() or source in self._refreshing:
                    continue
                self._refreshing.add(source)
            self._executor.submit(self._refresh, source, cached)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no refresh is in flight (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._refreshing and time.monotonic() < deadline:
            time.sleep(0.01)


def fetch_sizes(conn_id: str, advertiser_id: str, audience_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    from airflow_provider_tiktok.hooks.tiktok import TikTokHook

    details = TikTokHook(conn_id).get_audiences(advertiser_id, list(audience_ids))
    return {
        str(item.get("audience_id")): {name: item.get(name) for name in SIZE_FIELDS}
        for item in details
        if item.get("audience_id")
    }


class AudienceSizes:
    """TikTok's ``cover_num`` / ``is_valid`` / ``is_expiring`` per audience, refreshed on a background thread.

    ``get`` answers at once from the cache (``None`` until the first answer) and queues a refresh of what is
    missing or older than ``ttl``; one refresh per advertiser is in flight at a time.
    """

    def __init__(
        self,
        conn_id: Callable[[], str | None],
        ttl: float = 600.0,
        error_ttl: float = 60.0,
        fetch: Callable[[str, str, Sequence[str]], dict[str, dict[str, Any]]] = fetch_sizes,
    ):
        self.conn_id, self.ttl, self.error_ttl, self.fetch = conn_id, ttl, error_ttl, fetch
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._in_flight: set[str] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiktok-audience-sizes")

    def get(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any] | None]:
        conn_id = self.conn_id()
        answer: dict[tuple[str, str], dict[str, Any] | None] = {}
        stale: dict[str, list[str]] = {}
        now = time.monotonic()
        with self._lock:
            for advertiser, audience in keys:
                if not (conn_id and advertiser and audience.isdigit()):
                    answer[(advertiser, audience)] = {"error": "not asked"}
                    continue
                fetched_at, size = self._sizes.get((advertiser, audience), (None, None))
                answer[(advertiser, audience)] = size
                limit = self.error_ttl if size and size.get("error") else self.ttl
                if fetched_at is None or now - fetched_at > limit:
                    stale.setdefault(advertiser, []).append(audience)
            for advertiser, audiences in stale.items():
                if advertiser not in self._in_flight:
                    self._in_flight.add(advertiser)
                    self._executor.submit(self._refresh, conn_id, advertiser, audiences)
        return answer

    def _refresh(self, conn_id: str, advertiser: str, audiences: list[str]) -> None:
        try:
            found = self.fetch(conn_id, advertiser, audiences)
            result = {a: found.get(a, {"error": "not found"}) for a in audiences}
        except Exception as failure:
            log.warning("TikTok audience sizes for one advertiser unavailable: %s", type(failure).__name__)
            result = {a: {"error": "unavailable"} for a in audiences}
        with self._lock:
            now = time.monotonic()
            for audience, size in result.items():
                self._sizes[(advertiser, audience)] = (now, size)
            self._in_flight.discard(advertiser)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no refresh is in flight (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
