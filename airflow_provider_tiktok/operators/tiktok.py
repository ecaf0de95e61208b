"""SyncAudienceOperator: stream warehouse users into a TikTok Custom Audience, resumable across retries.

Orchestration only: validate → stage or resume → upload → report, each step a call into ``sync/``,
``audience/`` or the hook. Each attempt:

1. validates the launch (settings, the ledger and results tables, token and ad account, the source's columns);
2. on the first attempt, stages prepared batches in the warehouse ledger while uploading them (a batch is
   sent only once it is staged); the audience is created when the first batch is ready, so a run with no
   users creates nothing; on a retry, sends only the batches TikTok has not acknowledged;
3. reports Entered / Synced / Not Synced / Pending / Errored to the results table, XCom and the log.

Users still pending when the attempt's budget runs out make the task fail *retryably*; Airflow's
retries (see ``airflow_provider_tiktok.sync.retry_arguments``) resume them until ``retry_window`` after
the first attempt, then they are counted as errored. Clearing a finished sync starts a fresh one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_tiktok.audience import FieldRules, PrepareOptions, UserBatch
from airflow_provider_tiktok.audience.batching import MAX_BATCH_SIZE, validate_batch_size
from airflow_provider_tiktok.exceptions import TikTokAPIError, TikTokConfigurationError, TikTokSourceError
from airflow_provider_tiktok.hooks.tiktok import MAPPING_ACTIONS, TikTokHook, check_audience_name
from airflow_provider_tiktok.links.tiktok import AUDIENCE_XCOM_KEY, TikTokAudienceLink
from airflow_provider_tiktok.sync.ledger import (
    DEFAULT_LEDGER_RETENTION,
    AttemptCounters,
    BatchOutcome,
    BatchTotals,
    Ledger,
    Status,
    SyncKey,
    SyncRecord,
)
from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS, SlidingWindowLimiter
from airflow_provider_tiktok.sync.results import ResultsTable, metrics_of, summary, xcom_value
from airflow_provider_tiktok.sync.retry_window import DEFAULT_RETRY_WINDOW
from airflow_provider_tiktok.sync.staging import Preparation, Source, StagingFeed
from airflow_provider_tiktok.sync.timing import PhaseClock
from airflow_provider_tiktok.sync.upload import Progress, upload_batches
from airflow_provider_tiktok.warehouse import Warehouse

if TYPE_CHECKING:
    from airflow.sdk import Context


class SyncAudienceOperator(BaseOperator):
    """
    Sync users from a warehouse query (or DataFrames) into a TikTok Custom Audience.

    :param tiktok_conn_id: ``tiktok`` connection (token; default advertiser in its extras).
    :param advertiser_id: ad account; defaults to the connection's ``advertiser_id``.
    :param audience_id: sync into this existing audience, or
    :param audience_name: find the audience by exact name (created if missing and allowed).
    :param create_audience_if_missing: create ``audience_name`` when it does not exist.
    :param action: ``add`` users to the audience or ``remove`` them.
    :param sql: query selecting the users, read in chunks from ``warehouse_conn_id``.
    :param parameters: values for the query's ``:named`` placeholders (templated; e.g. the data interval).
    :param warehouse_conn_id: common-sql connection holding the source, the results table and the ledger.
    :param source: instead of ``sql``, a DataFrame or an iterable of DataFrames (programmatic use).
    :param user_key_column: column identifying a user (de-duplication).
    :param match_fields: match field -> source column, e.g. ``{"email": "email", "phone": "phone_number"}``.
    :param batch_size: users per request, at most 10,000.
    :param max_qps: this task's ceiling within TikTok's 50 requests/s per token.
    :param results_table: table (in the warehouse) receiving one metrics row per task run.
    :param ledger_table: names the ledger's two tables: ``<ledger_table>`` (one row per sync) and
        ``<ledger_table>_batches`` (staged batches and their fates).
    :param ledger_retention: how long ended syncs stay in the ledger (their payloads go as soon as each
        batch's fate is final); older ones are removed by the next sync on the same ledger.
    :param dry_run: validate and count outcomes without creating or sending anything.
    :param retry_window: how long after the first attempt pending users may still be retried.
    :param attempt_budget: stop starting new batches after this long; the rest waits for an Airflow retry.
    :param request_retry_limit: attempts per request for rate-limited or transient answers, within an attempt.
    :param request_retry_seconds: longest time one request keeps retrying before its batch waits for the next attempt.
    :param concurrency: requests in flight at once.
    :param chunk_size: source rows per chunk.
    :param prepare_workers: chunks normalised and hashed at once (threads).
    :param default_phone_country: ISO country for national phone numbers.
    :param device_id_hash: ``sha256`` (default) or ``md5`` for IDFA/GAID.
    :param accept_hashed: pass values that already are digests through unchanged.
    :param normalize_gmail: strip dots and ``+tags`` from Gmail addresses before hashing.
    """

    template_fields: Sequence[str] = (
        "tiktok_conn_id",
        "advertiser_id",
        "audience_id",
        "audience_name",
        "sql",
        "parameters",
        "warehouse_conn_id",
        "match_fields",
        "results_table",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "match_fields": "json"}
    ui_color = "#25F4EE"
    operator_extra_links = (TikTokAudienceLink(),)

    def __init__(
        self,
        *,
        tiktok_conn_id: str = TikTokHook.default_conn_name,
        advertiser_id: str | None = None,
        audience_id: str | None = None,
        audience_name: str | None = None,
        create_audience_if_missing: bool = True,
        action: str = "add",
        sql: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        warehouse_conn_id: str | None = None,
        source: pd.DataFrame | Iterable[pd.DataFrame] | None = None,
        user_key_column: str = "user_id",
        match_fields: Mapping[str, str] | None = None,
        batch_size: int = MAX_BATCH_SIZE,
        max_qps: float = TIKTOK_MAX_QPS,
        results_table: str = "tiktok_audience_sync_results",
        ledger_table: str = "tiktok_audience_sync_ledger",
        ledger_retention: timedelta = DEFAULT_LEDGER_RETENTION,
        dry_run: bool = False,
        retry_window: timedelta = DEFAULT_RETRY_WINDOW,
        attempt_budget: timedelta = timedelta(minutes=30),
        request_retry_limit: int = 8,
        request_retry_seconds: float = 300.0,
        concurrency: int = 8,
        chunk_size: int = 50_000,
        prepare_workers: int = 1,
        default_phone_country: str | None = None,
        device_id_hash: str = "sha256",
        accept_hashed: bool = False,
        normalize_gmail: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tiktok_conn_id = tiktok_conn_id
        self.advertiser_id = advertiser_id
        self.audience_id = audience_id
        self.audience_name = audience_name
        self.create_audience_if_missing = create_audience_if_missing
        self.action = action
        self.sql = sql
        self.parameters = dict(parameters or {})
        self.warehouse_conn_id = warehouse_conn_id
        self.source = source
        self.user_key_column = user_key_column
        self.match_fields = dict(match_fields or {})
        self.batch_size = batch_size
        self.max_qps = max_qps
        self.results_table = results_table
        self.ledger_table = ledger_table
        self.ledger_retention = ledger_retention
        self.dry_run = dry_run
        self.retry_window = retry_window
        self.attempt_budget = attempt_budget
        self.request_retry_limit = request_retry_limit
        self.request_retry_seconds = request_retry_seconds
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.prepare_workers = prepare_workers
        self.field_rules = FieldRules(default_phone_country, device_id_hash, accept_hashed, normalize_gmail)

    def execute(self, context: Context) -> dict[str, Any]:
        clock = PhaseClock()
        try:
            preparation = self._validate_settings()
            hook = TikTokHook(
                self.tiktok_conn_id,
                request_gate=SlidingWindowLimiter(self.max_qps),
                request_retry_limit=self.request_retry_limit,
                request_retry_seconds=self.request_retry_seconds,
                pool_maxsize=max(32, self.concurrency),
            )
            with closing(hook):
                return self._sync(context, hook, preparation, clock)
        except TikTokConfigurationError as err:
            raise AirflowFailException(str(err)) from None
        except TikTokSourceError as err:
            raise AirflowException(str(err)) from None
        except TikTokAPIError as err:
            raise (AirflowException if err.retryable else AirflowFailException)(str(err)) from None

    def _validate_settings(self) -> Preparation:
        """Everything that can be refused without a network call, each with one clear message."""
        if self.action not in MAPPING_ACTIONS:
            raise TikTokConfigurationError(f"action must be 'add' or 'remove', not {self.action!r}.")
        if not self.audience_id and not self.audience_name:
            raise TikTokConfigurationError("Name the audience: set audience_id or audience_name.")
        if self.audience_name:
            check_audience_name(self.audience_name)
        if (self.sql is None) == (self.source is None):
            raise TikTokConfigurationError("Give exactly one source: sql (with warehouse_conn_id) or source.")
        if not self.warehouse_conn_id:
            raise TikTokConfigurationError(
                "warehouse_conn_id is required: it holds the results table and the batch ledger that lets "
                "retries resume."
            )
        if not 0 < self.max_qps <= TIKTOK_MAX_QPS:
            raise TikTokConfigurationError(f"max_qps must be in (0, {TIKTOK_MAX_QPS}], got {self.max_qps}.")
        if min(self.concurrency, self.chunk_size, self.prepare_workers) < 1:
            raise TikTokConfigurationError("concurrency, chunk_size and prepare_workers must be at least 1.")
        try:
            validate_batch_size(self.batch_size)
        except ValueError as err:
            raise TikTokConfigurationError(str(err)) from None
        options = PrepareOptions(self.match_fields, self.user_key_column, self.field_rules)
        return Preparation(options, self.batch_size, self.prepare_workers)

    def _sync(self, context: Context, hook: TikTokHook, preparation: Preparation, clock: PhaseClock) -> dict[str, Any]:
        ti = context["ti"]
        warehouse = Warehouse(self.warehouse_conn_id)  # type: ignore[arg-type]
        ledger = Ledger(warehouse, self.ledger_table, SyncKey(ti.dag_id, ti.task_id, ti.run_id, ti.map_index))
        results = ResultsTable(warehouse, self.results_table)
        ledger.ensure_tables()
        results.ensure()
        ledger.prune(self.ledger_retention)
        record = ledger.load()
        if record is not None and record.status is not Status.PENDING:
            # Ended: this is a clear (a fresh sync). Staging: killed before staging ended.
            self.log.info("Ledger says %r for this run: starting a fresh sync.", record.status.value)
            ledger.forget()
            record = None
        if record is not None:
            # Launch checks passed at the first attempt; during an outage they would only burn this one.
            self.log.info("Resuming: users were staged at the first attempt; sending only unacknowledged batches.")
            return self._upload_and_report(context, hook, ledger, results, record, ledger.pending_batches(), clock)
        advertiser_id = hook.advertiser_id(self.advertiser_id)
        hook.check_access(advertiser_id)
        source = Source(self.sql, self.parameters, self.source, self.chunk_size)
        with clock.phase("read"):
            frames = source.chunks(warehouse, preparation.options)
        clock.chunk_read()
        record = SyncRecord.new(advertiser_id, None, self.audience_name, self.action)
        self._find_audience(hook, record)
        if self.dry_run:
            return self._dry_run(results, ledger.key, record, preparation.count_only(frames, record))

        def create_audience() -> str:
            return hook.create_audience_once(advertiser_id, str(record.audience_name))

        batches = preparation.stage(frames, ledger, record, clock, create_audience)
        return self._upload_and_report(context, hook, ledger, results, record, batches, clock)

    def _find_audience(self, hook: TikTokHook, record: SyncRecord) -> None:
        """Fill in the target audience, or make sure it may be created once there are users to send."""
        found = hook.find_audience(record.advertiser_id, audience_id=self.audience_id, audience_name=self.audience_name)
        if found is not None:
            record.audience_id, record.audience_name = str(found["audience_id"]), found.get("name")
        elif self.audience_id:
            raise TikTokConfigurationError(f"Audience {self.audience_id} was not found for {record.advertiser_id}.")
        elif self.action == "remove" or not self.create_audience_if_missing:
            raise TikTokConfigurationError(
                f"Audience {self.audience_name!r} does not exist for advertiser {record.advertiser_id} "
                f"({'nothing to remove from' if self.action == 'remove' else 'create_audience_if_missing is off'})."
            )

    def _upload_and_report(
        self,
        context: Context,
        hook: TikTokHook,
        ledger: Ledger,
        results: ResultsTable,
        record: SyncRecord,
        batches: Iterable[UserBatch],
        clock: PhaseClock,
    ) -> dict[str, Any]:
        staging = isinstance(batches, StagingFeed)
        record.attempts += 1
        if not staging:
            ledger.save(record)  # a killed attempt still counts (a staging one starts afresh anyway)
        counters = AttemptCounters(hook.stats, record, ledger)

        def send(batch: UserBatch) -> None:  # the audience id is known once the first batch was staged
            hook.map_batch(record.action, record.advertiser_id, [str(record.audience_id)], batch)  # type: ignore[arg-type]

        def on_outcome(outcome: BatchOutcome) -> None:
            ledger.record_outcome(outcome)
            counters.save_now_and_then()

        window_over = time.time() > record.first_attempt_at + self.retry_window.total_seconds()
        result = None
        with ledger.warehouse.one_connection():  # the attempt's ledger statements, one per batch, share it
            if not window_over:
                with clock.phase("upload"):
                    result = upload_batches(
                        batches,
                        clock.stamp_first_request(send),
                        concurrency=self.concurrency,
                        on_outcome=on_outcome,
                        start_deadline=time.monotonic() + self.attempt_budget.total_seconds(),
                        progress=Progress(None if staging else ledger.totals().count(Status.PENDING), self.log.info),
                    )
            if isinstance(batches, StagingFeed):
                batches.finish()  # the upload may have stopped early: the rest is staged for the retry
            failure = self._settle(ledger, record, result, window_over)
            with clock.phase("report"):
                counters.add_to_record()
                record.duration_seconds += clock.elapsed()
                record.phase_seconds = clock.merged(record.phase_seconds)
                record.time_to_first_request_seconds = (
                    record.time_to_first_request_seconds or clock.first_request_seconds
                )
                metrics = metrics_of(record, ledger.totals())
                status = Status.FAILED if failure else (Status.PENDING if metrics.pending else Status.FINISHED)
                results.write(ledger.key, record, metrics, status)
                record.status = status
                ledger.save(record)  # after the results row: a retry after a failed write never re-uploads
        context["ti"].xcom_push(
            key=AUDIENCE_XCOM_KEY, value={"advertiser_id": record.advertiser_id, "audience_id": record.audience_id}
        )
        self.log.info("Sync metrics: %s", summary(metrics))
        if failure:
            raise AirflowFailException(failure)
        if metrics.pending:
            raise AirflowException(
                f"{metrics.pending} users still pending after this attempt "
                f"({(result.last_retryable if result else None) or 'attempt budget used'}); "
                "Airflow will retry and resume with the unsent batches."
            )
        return xcom_value(metrics, record)

    def _settle(self, ledger: Ledger, record: SyncRecord, result: Any, window_over: bool) -> str | None:
        """Error what can no longer be sent; the reason the task must fail without retrying, if any."""
        if result is not None and result.fatal is not None:
            ledger.error_pending(result.fatal.code)
            return f"Sync stopped: {result.fatal}"
        if window_over:
            code = ledger.totals().pending_last_code
            ledger.error_pending(code if code is not None else -1)
            return (
                f"Retry window of {self.retry_window} since the first attempt is over; "
                "users still pending are counted as errored."
            )
        return None

    def _dry_run(self, results: ResultsTable, key: SyncKey, record: SyncRecord, would_send: int) -> dict[str, Any]:
        """Prepared and counted, nothing sent: what would be synced stays 'pending'."""
        record.status, record.attempts = Status.DRY_RUN, 1
        metrics = metrics_of(record, BatchTotals(users={Status.PENDING: would_send}))
        results.write(key, record, metrics, Status.DRY_RUN)
        self.log.info("Dry run, nothing sent: %s", summary(metrics))
        return xcom_value(metrics, record) | {"dry_run": True}
