"""From the source to staged batches: read chunks, prepare users, freeze them into numbered batches.

Staging and uploading overlap: each batch is committed to the ledger and then handed to the upload, so
the first request leaves while later chunks are still being read (and nothing is sent unstaged).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from airflow_provider_tiktok.audience import PrepareOptions, UserBatch, UserPreparer, iter_batches
from airflow_provider_tiktok.exceptions import TikTokConfigurationError, TikTokSourceError
from airflow_provider_tiktok.sync.ledger import Ledger, Status, SyncRecord
from airflow_provider_tiktok.sync.timing import PhaseClock
from airflow_provider_tiktok.warehouse import Warehouse, one_line_error


@dataclass(frozen=True)
class Source:
    """A sync's users: a query on the warehouse, or DataFrames handed in by code."""

    sql: str | None = None
    parameters: dict | None = None
    frames: pd.DataFrame | Iterable[pd.DataFrame] | None = None
    chunk_size: int = 50_000

    def chunks(self, warehouse: Warehouse, options: PrepareOptions) -> Iterator[pd.DataFrame]:
        """The chunks; the first is read now, so a bad query or a missing column fails before any write."""
        if isinstance(self.frames, pd.DataFrame):
            frames: Iterator[pd.DataFrame] = iter([self.frames])
        elif self.frames is not None:
            frames = iter(self.frames)
        else:
            frames = warehouse.read_chunks(str(self.sql), self.chunk_size, self.parameters)
        try:
            first = next(frames, None)
        except Exception as err:  # the driver's own exception types vary by warehouse
            raise TikTokConfigurationError(f"Could not read the source query: {one_line_error(err)}") from None
        if first is None:
            return iter(())
        options.check_columns(first.columns)
        return itertools.chain([first], _later_chunks(frames))


def _later_chunks(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """A source can also fail mid-stream (a dropped connection, a statement timeout): one line, not
    the driver's traceback, and retryable, since the retry stages afresh."""
    try:
        yield from frames
    except Exception as err:  # the driver's own exception types vary by warehouse
        raise TikTokSourceError(f"Reading the source failed after its first chunk: {one_line_error(err)}") from None


@dataclass(frozen=True)
class Preparation:
    options: PrepareOptions
    batch_size: int
    workers: int = 1

    def batches(self, frames: Iterator[pd.DataFrame], preparer: UserPreparer) -> Iterator[UserBatch]:
        prepared = preparer.prepare(frames, workers=self.workers)
        return iter_batches(prepared, self.options.id_schema, self.batch_size)

    def count_only(self, frames: Iterator[pd.DataFrame], record: SyncRecord) -> int:
        """A dry run: prepare and count, stage nothing; returns the users that would be sent."""
        preparer = UserPreparer(self.options)
        deque(self.batches(frames, preparer), maxlen=0)
        record.count_prepared(preparer.counts)
        return preparer.counts.prepared

    def stage(
        self,
        frames: Iterator[pd.DataFrame],
        ledger: Ledger,
        record: SyncRecord,
        clock: PhaseClock,
        create_audience: Callable[[], str],
    ) -> StagingFeed:
        """Stage every batch on a thread of its own and feed each to the upload once it is committed."""
        return StagingFeed(self, frames, ledger, record, clock, create_audience)


class StagingFeed:
    """Batches as they are staged, for the upload to consume while staging goes on.

    Staging never waits for the upload: a kill mid-upload then finds every user staged and a retry
    resumes exactly the frozen set. At most ``in_memory`` staged batches wait in memory; later ones
    travel as their number and are read back from the ledger when their turn comes. The audience is
    created when the first batch is ready, so a run without users creates nothing; the record turns
    ``pending`` once every batch is staged.
    """

    _DONE = object()

    def __init__(
        self,
        preparation: Preparation,
        frames: Iterator[pd.DataFrame],
        ledger: Ledger,
        record: SyncRecord,
        clock: PhaseClock,
        create_audience: Callable[[], str],
        in_memory: int = 16,
    ) -> None:
        self.ledger, self.record, self.in_memory = ledger, record, in_memory
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held = threading.Semaphore(in_memory)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(preparation, frames, clock, create_audience),
            name="tiktok-staging",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self, preparation: Preparation, frames: Iterator[pd.DataFrame], clock: PhaseClock, create: Callable[[], str]
    ) -> None:
        try:
            preparer = UserPreparer(preparation.options)
            prepared = clock.timed("prepare", preparation.batches(clock.timed("read", frames), preparer))
            first = next(prepared, None)
            if first is not None and self.record.audience_id is None:
                self.record.audience_id = create()
            self.ledger.save(self.record)
            staged = self.ledger.stage(itertools.chain([first], prepared) if first is not None else ())
            for batch in clock.timed("stage", staged):
                held = self._held.acquire(blocking=False)
                self._queue.put((batch.number, batch if held else None))
            self.record.count_prepared(preparer.counts)
            self.record.status = Status.PENDING
            self.ledger.save(self.record)
        except BaseException as err:  # handed to the consuming thread, which raises it
            self._error = err
        finally:
            self._queue.put(self._DONE)

    def __iter__(self) -> Iterator[UserBatch]:
        while (item := self._queue.get()) is not self._DONE:
            number, batch = item
            if batch is not None:
                self._held.release()
                yield batch
            else:
                yield self.ledger.load_batch(number)
        self._raise_if_failed()

    def finish(self) -> None:
        """Wait until every batch is staged (the upload may have stopped early), raising what staging hit."""
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
