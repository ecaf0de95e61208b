"""One upload attempt of a sync: send what is staged, record each batch's fate, settle, and report.

No Airflow imports: the operator turns the attempt's ``AttemptOutcome`` into success, a retry or a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa

from airflow_provider_tiktok.audience import SyncMetrics, UserBatch
from airflow_provider_tiktok.exceptions import TikTokError
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.sync.ledger import AttemptCounters, BatchOutcome, BatchTotals, Ledger, Status, SyncRecord
from airflow_provider_tiktok.sync.results import ResultsTable, metrics_of
from airflow_provider_tiktok.sync.staging import Preparation, StagingFeed
from airflow_provider_tiktok.sync.timing import PhaseClock, add_lags
from airflow_provider_tiktok.sync.upload import Progress, Uploader, UploadResult, upload_batches


@dataclass(frozen=True)
class AttemptLimits:
    retry_window: timedelta
    attempt_budget: timedelta
    concurrency: int


@dataclass(frozen=True)
class AttemptOutcome:
    metrics: SyncMetrics
    status: Status
    failure: str | None = None  # set when retrying cannot help
    last_retryable: str | None = None

    @property
    def pending(self) -> int:
        return self.metrics.pending + self.metrics.removals_pending


class UploadAttempt:
    def __init__(
        self,
        hook: TikTokHook,
        uploader: Uploader,
        ledger: Ledger,
        results: ResultsTable,
        record: SyncRecord,
        preparation: Preparation,
        clock: PhaseClock,
        limits: AttemptLimits,
        log_info: Callable[[str], None],
    ) -> None:
        self.uploader, self.ledger, self.results, self.record = uploader, ledger, results, record
        self.preparation, self.clock, self.limits, self.log_info = preparation, clock, limits, log_info
        self.counters = AttemptCounters(hook.stats, record, ledger)

    def send(self, batch: UserBatch) -> None:
        """The audience id is known by now: the feed hands on no batch before the audience is settled."""
        action = batch.action or self.record.action
        self.uploader.send(batch, str(self.record.audience_id), action)  # type: ignore[arg-type]

    def on_outcome(self, outcome: BatchOutcome, batch: UserBatch) -> None:
        if outcome.status is Status.ACKNOWLEDGED:
            self.clock.stamp_ack()
            if batch.entered_at is not None and batch.entered_at.null_count < len(batch.entered_at):
                self._count_freshness(batch.entered_at)
        mirror = self.preparation.mirror
        if mirror is not None and outcome.status is Status.ACKNOWLEDGED:
            fields = [f.value for f in self.preparation.options.fields]
            snapshot = mirror.snapshot(self.ledger.warehouse, self.record.advertiser_id, self.record.audience_id)
            snapshot.apply(batch, fields)  # before the ledger: a crash between the two only resends
        self.ledger.record_outcome(outcome)
        self.counters.save_now_and_then()

    def _count_freshness(self, entered_at: pa.Array) -> None:
        lags = time.time() - entered_at.drop_null().to_numpy()
        add_lags(self.record.lag_histogram, lags)
        self.record.lag_max_seconds = round(max(self.record.lag_max_seconds or 0.0, float(lags.max())), 1)

    def run(self, batches: Iterable[UserBatch]) -> AttemptOutcome:
        record, ledger, clock = self.record, self.ledger, self.clock
        staging = isinstance(batches, StagingFeed)
        record.attempts += 1
        if not staging:
            ledger.save(record)  # a killed attempt still counts (a staging one starts afresh anyway)
        window_over = time.time() > record.first_attempt_at + self.limits.retry_window.total_seconds()
        result = None
        try:
            with ledger.warehouse.one_connection():  # the attempt's ledger statements, one per batch, share it
                if not window_over:
                    with clock.phase("upload"):
                        waiting = None if staging else ledger.totals().count(Status.PENDING)
                        result = upload_batches(
                            batches,
                            clock.stamp_first_request(self.send),
                            concurrency=self.limits.concurrency,
                            on_outcome=self.on_outcome,
                            start_deadline=time.monotonic() + self.limits.attempt_budget.total_seconds(),
                            progress=Progress(waiting, self.log_info),
                        )
                if isinstance(batches, StagingFeed):
                    batches.finish()  # the upload may have stopped early: the rest is staged for the retry
        except TikTokError:
            self._report_failed()  # e.g. staging could not read on or create an audience: not left 'staging'
            raise
        with ledger.warehouse.one_connection():
            failure = self._settle(result, window_over)
            with clock.phase("report"):
                return self._report(failure, result)

    def _report_failed(self) -> None:
        """The results row of an attempt cut short by an error, as far as the ledger knows."""
        self.counters.add_to_record()
        with suppress(TikTokError):  # the ledger unreadable too: the row stays as it was, the error is raised
            # Staging cut short: how many entered is unknown and a retry stages afresh, so nothing is counted.
            staged = self.record.status is not Status.STAGING
            self.results.write_failed(self.ledger.key, self.record, self.ledger.totals() if staged else BatchTotals())

    def _settle(self, result: UploadResult | None, window_over: bool) -> str | None:
        """Error what can no longer be sent; the reason the task must fail without retrying, if any."""
        if result is not None and result.fatal is not None:
            self.ledger.error_pending(result.fatal.code)
            return f"Sync stopped: {result.fatal}"
        if window_over:
            code = self.ledger.totals().pending_last_code
            self.ledger.error_pending(code if code is not None else -1)
            return (
                f"Retry window of {self.limits.retry_window} since the first attempt is over; "
                "users still pending are counted as errored."
            )
        return None

    def _report(self, failure: str | None, result: UploadResult | None) -> AttemptOutcome:
        record, clock = self.record, self.clock
        self.counters.add_to_record()
        record.duration_seconds += clock.elapsed()
        record.active_seconds += clock.active_seconds
        record.cpu_seconds += clock.cpu_seconds()
        record.phase_seconds = clock.merged(record.phase_seconds)
        record.time_to_first_request_seconds = record.time_to_first_request_seconds or clock.first_request_seconds
        metrics = metrics_of(record, self.ledger.totals())
        waiting = metrics.pending + metrics.removals_pending
        status = Status.FAILED if failure else (Status.PENDING if waiting else Status.FINISHED)
        self.results.write(self.ledger.key, record, metrics, status)
        record.status = status
        self.ledger.save(record)  # after the results row: a retry after a failed write never re-uploads
        return AttemptOutcome(metrics, status, failure, result.last_retryable if result else None)
