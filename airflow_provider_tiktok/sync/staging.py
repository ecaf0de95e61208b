"""From the source to staged batches: read chunks, prepare users, freeze them into numbered batches.

Staging and uploading overlap: each batch is committed to the ledger and then handed to the upload, so
the first request leaves while later chunks are still being read (and nothing is sent unstaged).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from airflow_provider_tiktok.audience import PrepareOptions, UserBatch, UserPreparer, iter_batches
from airflow_provider_tiktok.audience.prepare import PreparedUsers
from airflow_provider_tiktok.exceptions import TikTokConfigurationError, TikTokSourceError
from airflow_provider_tiktok.sync.launch import beside, stopped_by
from airflow_provider_tiktok.sync.ledger import BatchTotals, Ledger, Status, SyncRecord
from airflow_provider_tiktok.sync.mirror import (
    MirrorSettings,
    RemovalRefused,
    Snapshot,
    current_members,
    plan_mirror,
)
from airflow_provider_tiktok.sync.timing import PhaseClock
from airflow_provider_tiktok.warehouse import Warehouse, one_line_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """A sync's users: a query on the warehouse, or DataFrames handed in by code."""

    sql: str | None = None
    parameters: dict | None = None
    frames: pd.DataFrame | Iterable[pd.DataFrame] | None = None
    chunk_size: int = 50_000
    also_needs: tuple[str, ...] = ()  # columns beyond the match fields, e.g. the entry time

    def chunks(self, warehouse: Warehouse, options: PrepareOptions) -> Iterator[pd.DataFrame]:
        """The chunks; the first is read now, so a bad query or a missing column fails before any write."""
        if isinstance(self.frames, pd.DataFrame):
            frames: Iterator[pd.DataFrame] = iter([self.frames])
        elif self.frames is not None:
            frames = iter(self.frames)
        else:
            used = [*options.source_columns, *self.also_needs]
            frames = warehouse.read_chunks(str(self.sql), self.chunk_size, self.parameters, used)
        try:
            first = next(frames, None)
        except Exception as err:  # the driver's own exception types vary by warehouse
            raise TikTokConfigurationError(f"Could not read the source query: {one_line_error(err)}") from None
        if first is None:
            return iter(())
        options.check_columns(first.columns)
        missing = [column for column in self.also_needs if column not in first.columns]
        if missing:
            raise TikTokConfigurationError(f"Source has no column(s) {missing}; it has {sorted(first.columns)}.")
        return itertools.chain([first], _later_chunks(frames))


def _later_chunks(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """A source can also fail mid-stream (a dropped connection, a statement timeout): one line, not
    the driver's traceback, and retryable, since the retry stages afresh."""
    try:
        yield from frames
    except Exception as err:  # the driver's own exception types vary by warehouse
        raise TikTokSourceError(f"Reading the source failed after its first chunk: {one_line_error(err)}") from None


def epoch_seconds(values: pd.Series) -> pd.Series:
    """Entry times as epoch seconds: numbers are taken as epoch seconds, text and datetimes are parsed
    (naive ones as UTC); anything unreadable is unknown (NaN) and left out of the freshness figures."""
    numbers = pd.to_numeric(values, errors="coerce")
    moments = pd.to_datetime(values.where(numbers.isna()), utc=True, errors="coerce", format="mixed")
    return numbers.where(numbers.notna(), (moments - pd.Timestamp(0, tz="UTC")).dt.total_seconds())


@dataclass(frozen=True)
class Preparation:
    """How a sync turns its source into batches: the plain path streams, mirror mode plans first."""

    options: PrepareOptions
    batch_size: int
    workers: int = 1
    rejects: Callable[[pa.Table], None] | None = None  # each chunk's users not synced, e.g. to a table
    mirror: MirrorSettings | None = None
    entered_at_column: str | None = None  # when each user entered: freshness is measured from it

    def batches(
        self,
        frames: Iterator[pd.DataFrame],
        preparer: UserPreparer,
        clock: PhaseClock,
        record: SyncRecord,
        warehouse: Warehouse,
        audience_found: Callable[[], None],
        dry_run: bool = False,
    ) -> Iterator[UserBatch]:
        """The sync's batches; a dry run plans a mirror run that would be refused and changes no snapshot.
        ``audience_found`` returns once ``record`` names the target audience, if it exists (the launch checks)."""
        entered: deque[pd.Series] = deque()
        frames = self._remember_entry_times(clock.timed("read", frames), entered)
        prepared = self._reporting(preparer.prepare(frames, workers=self.workers), entered)
        if self.mirror is None:
            return clock.timed("prepare", iter_batches(prepared, self.options.id_schema, self.batch_size))
        fields = [f.value for f in self.options.fields]
        mirror = self.mirror

        def load_snapshot() -> tuple[Snapshot, pa.Table]:
            audience_found()
            snapshot = mirror.snapshot(warehouse, record.advertiser_id, record.audience_id)
            return snapshot, snapshot.fingerprints()

        # Beside the read, once the checks have found the audience: the snapshot crosses the driver as JSON
        # lines, built and parsed with the interpreter lock free, so the read does not slow down.
        loading = beside(load_snapshot, "tiktok-snapshot")
        try:
            with clock.phase("prepare"):
                current = current_members(stopped_by(loading, prepared), fields)
        finally:
            with clock.phase("plan"):
                wait([loading])  # no read of this sync outlives its staging
        with clock.phase("plan"):
            snapshot, previous = loading.result()
            plan = plan_mirror(current, previous, fields, lambda keys: snapshot.digests_of(keys, fields))
        log.info("%s", plan.describe().capitalize())
        try:
            self.mirror.check(plan)
        except RemovalRefused as refused:
            if not dry_run:
                raise  # before the record counts anyone: staging did not end, so its failed row counts nothing
            log.warning("A real run would be refused: %s", refused)
        record.unchanged = plan.unchanged
        record.removed_without_request = len(plan.covered)
        if not dry_run:
            snapshot.forget(plan.covered)
        return plan.batches(self.options.id_schema, fields, self.batch_size)

    def _remember_entry_times(
        self, frames: Iterator[pd.DataFrame], entered: deque[pd.Series]
    ) -> Iterator[pd.DataFrame]:
        """Each chunk's entry times as epoch seconds, kept in chunk order for ``_reporting`` to pair up."""
        for frame in frames:
            if self.entered_at_column is not None:
                entered.append(epoch_seconds(frame[self.entered_at_column]))
            yield frame

    def _reporting(self, prepared: Iterator[PreparedUsers], entered: deque[pd.Series]) -> Iterator[PreparedUsers]:
        for users in prepared:
            if self.rejects is not None:
                self.rejects(users.rejects)
            if self.entered_at_column is not None and users.keys is not None:
                seconds = entered.popleft().loc[users.keys.index]
                users.entered_at = pa.array(seconds.to_numpy(), pa.float64(), mask=seconds.isna().to_numpy())
            yield users

    def count_only(
        self,
        frames: Iterator[pd.DataFrame],
        record: SyncRecord,
        warehouse: Warehouse,
        audience_found: Callable[[], None],
    ) -> BatchTotals:
        """A dry run: prepare (and plan) without staging; the batches it would send, as pending totals."""
        preparer = UserPreparer(self.options)
        would_send: dict[tuple[str, Status], int] = {}
        for batch in self.batches(frames, preparer, PhaseClock(), record, warehouse, audience_found, dry_run=True):
            kind = (str(batch.action), Status.PENDING)
            would_send[kind] = would_send.get(kind, 0) + batch.counted_users
        record.count_prepared(preparer.counts)
        return BatchTotals(users=would_send)

    def stage(
        self,
        frames: Iterator[pd.DataFrame],
        ledger: Ledger,
        record: SyncRecord,
        clock: PhaseClock,
        settle_audience: Callable[[UserBatch | None], None],
        audience_found: Callable[[], None],
    ) -> StagingFeed:
        """Stage every batch on a thread of its own and feed each to the upload once it is committed."""
        return StagingFeed(self, frames, ledger, record, clock, settle_audience, audience_found)


class StagingFeed:
    """Batches as they are staged, for the upload to consume while staging goes on.

    Staging never waits for the upload: a kill mid-upload then finds every user staged and a retry
    resumes exactly the frozen set. At most ``in_memory`` staged batches wait in memory; later ones
    travel as their number and are read back from the ledger when their turn comes. The audience is
    settled (launch checks passed, created if missing) beside staging once the first batch is staged, so
    a run without users creates nothing and staging goes on during those API calls; the upload starts
    once it is settled, and the record turns ``pending`` once every batch is staged and the audience named.
    """

    _DONE = object()

    def __init__(
        self,
        preparation: Preparation,
        frames: Iterator[pd.DataFrame],
        ledger: Ledger,
        record: SyncRecord,
        clock: PhaseClock,
        settle_audience: Callable[[UserBatch | None], None],
        audience_found: Callable[[], None],
        in_memory: int = 16,
    ) -> None:
        self.ledger, self.record = ledger, record
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held = threading.Semaphore(in_memory)
        self._error: BaseException | None = None
        self._audience: Future[None] | None = None  # set before the first batch is handed on
        self._thread = threading.Thread(
            target=self._run,
            args=(preparation, frames, clock, settle_audience, audience_found),
            name="tiktok-staging",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self,
        preparation: Preparation,
        frames: Iterator[pd.DataFrame],
        clock: PhaseClock,
        settle_audience: Callable[[UserBatch | None], None],
        audience_found: Callable[[], None],
    ) -> None:
        try:
            preparer = UserPreparer(preparation.options)
            warehouse = self.ledger.warehouse
            prepared = preparation.batches(frames, preparer, clock, self.record, warehouse, audience_found)
            self.ledger.save(self.record)  # still 'staging': a retry after a kill starts afresh
            for batch in clock.timed("stage", self.ledger.stage(prepared)):
                if self._audience is None:
                    self._audience = beside(lambda first=batch: settle_audience(first), "tiktok-audience")
                elif self._audience.done():
                    self._audience.result()  # a refusal stops staging
                held = self._held.acquire(blocking=False)
                self._queue.put((batch.number, batch if held else None))
            if self._audience is None:
                self._audience = beside(lambda: settle_audience(None), "tiktok-audience")
            self._audience.result()  # a pending record names its audience
            self.record.count_prepared(preparer.counts)
            self.record.status = Status.PENDING
            self.ledger.save(self.record)
        except BaseException as err:  # handed to the consuming thread, which raises it
            self._error = err
        finally:
            if self._audience is not None:
                wait([self._audience])  # no API call of this sync outlives its staging
            self._queue.put(self._DONE)

    def __iter__(self) -> Iterator[UserBatch]:
        while (item := self._queue.get()) is not self._DONE:
            self._audience_settled()
            number, batch = item
            if batch is not None:
                self._held.release()
                yield batch
            else:
                yield self.ledger.load_batch(number)
        self._raise_if_failed()

    def _audience_settled(self) -> None:
        """Nothing is sent before the audience is settled; a refusal ends staging before it is raised."""
        if self._audience is None:
            raise RuntimeError("a staged batch was handed on before its audience was settled")
        try:
            self._audience.result()
        except BaseException:
            self._thread.join()
            raise

    def finish(self) -> None:
        """Wait until every batch is staged (the upload may have stopped early), raising what staging hit."""
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
