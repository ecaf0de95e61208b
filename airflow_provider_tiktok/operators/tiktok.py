"""SyncAudienceOperator: stream warehouse users into a TikTok Custom Audience, resumable across retries.

Orchestration only. Each attempt:

1. validates the launch (token, advertiser, audience named, match fields present in the source);
2. on the first attempt, resolves or creates the audience and **stages** the prepared, hashed batches
   in the warehouse ledger, freezing the set of users this run syncs;
3. uploads staged batches not yet acknowledged (threads + a shared rate limiter);
4. writes Entered / Synced / Not Synced / Pending / Errored to XCom and the results table.

Users still pending when the attempt's budget runs out make the task fail *retryably*; Airflow's
retries (see ``retry_arguments``) resume them until ``retry_window`` after the first attempt, then
they are counted as errored. Clearing a finished sync starts a fresh one for the same run.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_tiktok.audience import (
    FieldRules,
    PrepareOptions,
    SyncMetrics,
    UserPreparer,
    iter_batches,
)
from airflow_provider_tiktok.audience.batching import MAX_BATCH_SIZE, UserBatch, validate_batch_size
from airflow_provider_tiktok.audience.identifiers import scrub_identifiers
from airflow_provider_tiktok.exceptions import (
    TikTokAPIError,
    TikTokAudienceDeletedError,
    TikTokBadRequestError,
    TikTokConfigurationError,
    TikTokPermissionError,
)
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.limits import MAX_AUDIENCE_NAME_LENGTH, MAX_AUDIENCES_PER_ADVERTISER
from airflow_provider_tiktok.links.tiktok import AUDIENCE_XCOM_KEY, TikTokAudienceLink
from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS, SlidingWindowLimiter
from airflow_provider_tiktok.sync.retry_window import DEFAULT_RETRY_WINDOW
from airflow_provider_tiktok.sync.upload import BatchStatus, Progress, upload_batches
from airflow_provider_tiktok.warehouse import SyncKey, SyncRecord, Warehouse

if TYPE_CHECKING:
    from airflow.sdk import Context

ACTIONS = {"add": "add", "remove": "delete"}


@dataclass(frozen=True)
class AudienceTarget:
    advertiser_id: str
    audience_id: str | None  # None only in a dry run that would create the audience
    audience_name: str | None


WINDOW_EXCEEDED = "retry_window_exceeded"


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
    :param max_qps: this task's share of TikTok's 50 requests/s per token (split it between concurrent tasks).
    :param results_table: table (in the warehouse) receiving one metrics row per task run.
    :param ledger_table: table (in the warehouse) holding staged batches and their acknowledgements.
    :param dry_run: validate and count outcomes without creating or sending anything.
    :param retry_window: how long after the first attempt pending users may still be retried.
    :param attempt_budget: stop starting new batches after this long; the rest waits for an Airflow retry.
    :param request_retry_limit: attempts per request for rate-limited or transient answers, within an attempt.
    :param request_retry_seconds: longest time one request keeps retrying before its batch waits for the next attempt.
    :param concurrency: requests in flight at once.
    :param chunk_size: source rows per chunk.
    :param prepare_workers: chunks normalised and hashed at once (threads); 2 uses a second core while
        staging, when no upload runs yet.
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
        self.dry_run = dry_run
        self.retry_window = retry_window
        self.attempt_budget = attempt_budget
        self.request_retry_limit = request_retry_limit
        self.request_retry_seconds = request_retry_seconds
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.prepare_workers = prepare_workers
        self.field_rules = FieldRules(default_phone_country, device_id_hash, accept_hashed, normalize_gmail)

    # --- entry point -------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        hook: TikTokHook | None = None
        try:
            options = self._validate_settings()
            hook = TikTokHook(
                self.tiktok_conn_id,
                request_gate=SlidingWindowLimiter(self.max_qps),
                retry_limit=self.request_retry_limit,
                retry_max_seconds=self.request_retry_seconds,
                pool_maxsize=max(32, self.concurrency),
            )
            warehouse = Warehouse(self.warehouse_conn_id)  # type: ignore[arg-type]
            return self._sync(context, hook, warehouse, options, started)
        except (TikTokConfigurationError, TikTokAPIError) as err:
            if isinstance(err, TikTokAPIError) and err.retryable:
                raise AirflowException(str(err)) from None
            raise AirflowFailException(str(err)) from None
        finally:
            if hook is not None:
                hook.close()

    def _validate_settings(self) -> PrepareOptions:
        """Everything that can be refused without a network call, each with one clear message."""
        if self.action not in ACTIONS:
            raise TikTokConfigurationError(f"action must be 'add' or 'remove', not {self.action!r}.")
        if not self.audience_id and not self.audience_name:
            raise TikTokConfigurationError("Name the audience: set audience_id or audience_name.")
        if self.audience_name and len(self.audience_name) > MAX_AUDIENCE_NAME_LENGTH:
            raise TikTokConfigurationError(
                f"audience_name is {len(self.audience_name)} characters; TikTok keeps {MAX_AUDIENCE_NAME_LENGTH}."
            )
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
        return PrepareOptions(self.match_fields, self.user_key_column, self.field_rules)

    def _advertiser(self, hook: TikTokHook) -> str:
        advertiser_id = self.advertiser_id or hook.default_advertiser_id
        if not advertiser_id:
            raise TikTokConfigurationError(
                f"No ad account chosen: set advertiser_id or the 'advertiser_id' extra of {self.tiktok_conn_id!r}."
            )
        return str(advertiser_id)

    def _check_token_and_advertiser(self, hook: TikTokHook, advertiser_id: str) -> None:
        hook.get_user_info()
        extras = hook.connection.extra_dejson
        if extras.get("app_id") and extras.get("secret"):
            authorised = {str(a.get("advertiser_id")) for a in hook.list_advertisers()}
            if advertiser_id not in authorised:
                raise TikTokPermissionError(
                    40001,
                    f"advertiser {advertiser_id} is not authorised for this token (authorised: "
                    f"{', '.join(sorted(authorised)) or 'none'})",
                    endpoint="oauth2/advertiser/get/",
                )

    # --- the sync ----------------------------------------------------------------------------

    def _sync(
        self, context: Context, hook: TikTokHook, warehouse: Warehouse, options: PrepareOptions, started: float
    ) -> dict[str, Any]:
        ti = context["ti"]
        key = SyncKey(ti.dag_id, ti.task_id, ti.run_id, ti.map_index if ti.map_index is not None else -1)
        warehouse.ensure_ledger(self.ledger_table)
        warehouse.ensure_results_table(self.results_table)
        record = warehouse.load_sync(self.ledger_table, key)
        if record is not None and record.status != "staged":
            # Finished or failed: this is a clear (a fresh sync). Staging: killed before staging ended.
            self.log.info("Ledger phase %r for this run: starting a fresh sync.", record.status)
            warehouse.forget_sync(self.ledger_table, key)
            record = None
        if record is None:
            advertiser_id = self._advertiser(hook)
            self._check_token_and_advertiser(hook, advertiser_id)
            frames = self._source_frames(warehouse, options)
            target = self._resolve_audience(hook, advertiser_id)
            if self.dry_run:
                return self._dry_run(warehouse, key, frames, options, target)
            record = self._stage(warehouse, key, frames, options, target)
        else:
            # Launch checks passed at the first attempt; during an outage they would only burn this one.
            self.log.info("Resuming: users were staged at the first attempt; sending only unacknowledged batches.")
        advertiser_id = record.state["advertiser_id"]
        ti.xcom_push(key=AUDIENCE_XCOM_KEY, value={"advertiser_id": advertiser_id, "audience_id": record.audience_id})
        with warehouse.one_connection():  # the attempt's ledger statements, one per batch, share it
            return self._upload_and_report(hook, warehouse, key, record, started)

    def _source_frames(self, warehouse: Warehouse, options: PrepareOptions) -> Iterator[pd.DataFrame]:
        """The source as chunks; the first is read now so a bad query or missing column fails before any write."""
        if self.source is not None:
            frames: Iterator[pd.DataFrame] = (
                iter([self.source]) if isinstance(self.source, pd.DataFrame) else iter(self.source)
            )
        else:
            frames = warehouse.read_chunks(self.sql, self.chunk_size, self.parameters)  # type: ignore[arg-type]
        try:
            first = next(frames, None)
        except Exception as err:  # the driver's own exception types vary by warehouse
            raise TikTokConfigurationError(f"Could not read the source query: {_one_line(err)}") from None
        if first is None:
            return iter(())
        options.check_columns(first.columns)
        return itertools.chain([first], _later_chunks(frames))

    def _resolve_audience(self, hook: TikTokHook, advertiser_id: str) -> AudienceTarget:
        if self.audience_id:
            found = hook.get_audiences(advertiser_id, [self.audience_id])
            if not found:
                raise TikTokAudienceDeletedError(40002, f"audience {self.audience_id} was not found")
            return AudienceTarget(advertiser_id, str(self.audience_id), found[0].get("name"))
        name = str(self.audience_name)
        existing = hook.find_audience_by_name(advertiser_id, name)
        if existing is not None:
            return AudienceTarget(advertiser_id, str(existing["audience_id"]), name)
        if self.action == "remove" or not self.create_audience_if_missing:
            raise TikTokConfigurationError(
                f"Audience {name!r} does not exist for advertiser {advertiser_id} "
                f"({'nothing to remove from' if self.action == 'remove' else 'create_audience_if_missing is off'})."
            )
        if self.dry_run:
            return AudienceTarget(advertiser_id, None, name)
        return AudienceTarget(advertiser_id, self._create_once(hook, advertiser_id, name), name)

    def _create_once(self, hook: TikTokHook, advertiser_id: str, name: str) -> str:
        """Create, then converge: if a concurrent task created the same name, everyone keeps the oldest."""
        if len(hook.list_audiences(advertiser_id)) >= MAX_AUDIENCES_PER_ADVERTISER:
            raise TikTokConfigurationError(
                f"Advertiser {advertiser_id} already has {MAX_AUDIENCES_PER_ADVERTISER} audiences (TikTok's cap); "
                "delete unused ones or sync into an existing audience."
            )
        created = hook.create_audience(advertiser_id, name)
        winner = hook.find_audience_by_name(advertiser_id, name)
        winner_id = str(winner["audience_id"]) if winner else created
        if winner_id != created:
            self.log.info("Another task created audience %r first; using %s and deleting ours.", name, winner_id)
            hook.delete_audience(advertiser_id, created)
        else:
            self.log.info("Created audience %r (%s).", name, created)
        return winner_id

    def _new_record(self, status: str, target: AudienceTarget) -> SyncRecord:
        state = {"advertiser_id": target.advertiser_id, "audience_name": target.audience_name, "action": self.action}
        return SyncRecord(status, time.time(), target.audience_id, state)

    def _stage(
        self,
        warehouse: Warehouse,
        key: SyncKey,
        frames: Iterator[pd.DataFrame],
        options: PrepareOptions,
        target: AudienceTarget,
    ) -> SyncRecord:
        record = self._new_record("staging", target)
        warehouse.save_sync(self.ledger_table, key, record)
        preparer = UserPreparer(options)
        warehouse.stage_batches(self.ledger_table, key, self._prepared_batches(preparer, frames, options))
        counts = preparer.counts
        record.status = "staged"
        record.state.update(
            entered=counts.entered,
            not_synced=dict(counts.not_synced),
            invalid_by_field=dict(counts.invalid_by_field),
        )
        warehouse.save_sync(self.ledger_table, key, record)
        self.log.info(
            "Staged %d users to send out of %d entered; not synced: %s",
            counts.prepared,
            counts.entered,
            dict(counts.not_synced) or "none",
        )
        return record

    def _prepared_batches(
        self, preparer: UserPreparer, frames: Iterator[pd.DataFrame], options: PrepareOptions
    ) -> Iterator[UserBatch]:
        prepared = preparer.prepare(frames, workers=self.prepare_workers)
        return iter_batches(prepared, options.id_schema, self.batch_size)

    def _upload_and_report(
        self,
        hook: TikTokHook,
        warehouse: Warehouse,
        key: SyncKey,
        record: SyncRecord,
        started: float,
    ) -> dict[str, Any]:
        state = record.state
        state["attempts"] = state.get("attempts", 0) + 1
        warehouse.save_sync(self.ledger_table, key, record)  # a killed attempt still counts
        window_over = time.time() > record.first_attempt_at + self.retry_window.total_seconds()
        result = None
        if not window_over:
            totals = warehouse.batch_totals(self.ledger_table, key)
            progress = Progress(totals["by_status"].get(BatchStatus.STAGED.value, 0), self.log.info)
            result = upload_batches(
                warehouse.iter_staged_batches(self.ledger_table, key),
                self._sender(hook, state["advertiser_id"], str(record.audience_id)),
                concurrency=self.concurrency,
                on_outcome=lambda outcome: warehouse.record_outcome(self.ledger_table, key, outcome),
                start_deadline=time.monotonic() + self.attempt_budget.total_seconds(),
                progress=progress,
            )
        for counter in ("requests", "retries", "rate_limited"):
            state[counter] = state.get(counter, 0) + getattr(hook.stats, counter)
        state["duration_seconds"] = state.get("duration_seconds", 0.0) + time.monotonic() - started

        failure: str | None = None
        if result is not None and result.fatal is not None:
            warehouse.mark_staged_errored(self.ledger_table, key, result.fatal.code)
            failure = f"Sync stopped: {result.fatal}"
        elif window_over:
            code = warehouse.batch_totals(self.ledger_table, key)["pending_last_code"]
            warehouse.mark_staged_errored(self.ledger_table, key, code if code is not None else -1)
            failure = (
                f"Retry window of {self.retry_window} since the first attempt is over; "
                "users still pending are counted as errored."
            )
        metrics = self._metrics(warehouse, key, record)
        pending = metrics.pending
        record.status = "failed" if failure else ("staged" if pending else "finished")
        warehouse.save_sync(self.ledger_table, key, record)
        self._write_results(
            warehouse, key, record, metrics, status="pending" if record.status == "staged" else record.status
        )
        self.log.info("Sync metrics: %s", _summary(metrics))
        if failure:
            raise AirflowFailException(failure)
        if pending:
            last = result.last_retryable if result else None
            raise AirflowException(
                f"{pending} users still pending after this attempt ({last or 'attempt budget used'}); "
                "Airflow will retry and resume with the unsent batches."
            )
        return metrics.as_dict() | {
            "audience_id": record.audience_id,
            "audience_name": state.get("audience_name"),
            "advertiser_id": state["advertiser_id"],
        }

    def _sender(self, hook: TikTokHook, advertiser_id: str, audience_id: str):
        action = ACTIONS[self.action]

        def send(batch: UserBatch) -> None:
            try:
                hook.map_batch(action, advertiser_id, [audience_id], batch)
            except TikTokBadRequestError as err:
                if err.code == 40002 and not self._audience_exists(hook, advertiser_id, audience_id):
                    raise TikTokAudienceDeletedError(
                        err.code, f"audience {audience_id} no longer exists", endpoint=err.endpoint
                    ) from None
                raise

        return send

    @staticmethod
    def _audience_exists(hook: TikTokHook, advertiser_id: str, audience_id: str) -> bool:
        try:
            return bool(hook.get_audiences(advertiser_id, [audience_id]))
        except TikTokBadRequestError:
            return False

    def _metrics(self, warehouse: Warehouse, key: SyncKey, record: SyncRecord) -> SyncMetrics:
        state = record.state
        totals = warehouse.batch_totals(self.ledger_table, key)
        metrics = SyncMetrics(
            entered=state["entered"],
            synced=totals["by_status"].get(BatchStatus.ACKNOWLEDGED.value, 0),
            pending=totals["by_status"].get(BatchStatus.STAGED.value, 0),
            not_synced=Counter(state["not_synced"]),
            errored=Counter({f"api_error_{code}": users for code, users in totals["errored_by_code"].items()}),
            invalid_by_field=Counter(state.get("invalid_by_field", {})),
            requests=state.get("requests", 0),
            rate_limited=state.get("rate_limited", 0),
            retries=state.get("retries", 0),
            attempts=state.get("attempts", 1),
            batches_total=totals["batches"],
            duration_seconds=state.get("duration_seconds", 0.0),
        )
        metrics.check_invariant()
        return metrics

    def _write_results(
        self, warehouse: Warehouse, key: SyncKey, record: SyncRecord, metrics: SyncMetrics, *, status: str
    ) -> None:
        state = record.state
        warehouse.upsert_result(
            self.results_table,
            {
                "dag_id": key.dag_id,
                "task_id": key.task_id,
                "run_id": key.run_id,
                "map_index": key.map_index,
                "advertiser_id": state["advertiser_id"],
                "audience_id": record.audience_id,
                "audience_name": state.get("audience_name"),
                "action": state["action"],
                "status": status,
                "entered": metrics.entered,
                "synced": metrics.synced,
                "not_synced": metrics.not_synced_total,
                "pending": metrics.pending,
                "errored": metrics.errored_total,
                "not_synced_by_reason": dict(metrics.not_synced),
                "errored_by_reason": dict(metrics.errored),
                "requests": metrics.requests,
                "rate_limited": metrics.rate_limited,
                "retries": metrics.retries,
                "attempts": metrics.attempts,
                "duration_seconds": round(metrics.duration_seconds, 3),
                "users_per_second": metrics.users_per_second,
                "first_attempt_at": _iso(record.first_attempt_at),
                "updated_at": _iso(time.time()),
            },
        )

    def _dry_run(
        self,
        warehouse: Warehouse,
        key: SyncKey,
        frames: Iterator[pd.DataFrame],
        options: PrepareOptions,
        target: AudienceTarget,
    ) -> dict[str, Any]:
        """Prepare and count, send nothing: what would be synced stays 'pending'."""
        preparer = UserPreparer(options)
        for _ in self._prepared_batches(preparer, frames, options):
            pass
        counts = preparer.counts
        metrics = SyncMetrics(
            entered=counts.entered,
            pending=counts.prepared,
            not_synced=counts.not_synced,
            invalid_by_field=counts.invalid_by_field,
            attempts=1,
        )
        metrics.check_invariant()
        self._write_results(warehouse, key, self._new_record("dry_run", target), metrics, status="dry_run")
        self.log.info("Dry run, nothing sent: %s", _summary(metrics))
        return metrics.as_dict() | {
            "audience_id": target.audience_id,
            "audience_name": target.audience_name,
            "advertiser_id": target.advertiser_id,
            "dry_run": True,
        }


def _summary(metrics: SyncMetrics) -> str:
    return (
        f"entered={metrics.entered} synced={metrics.synced} not_synced={metrics.not_synced_total} "
        f"{dict(metrics.not_synced) or ''} pending={metrics.pending} errored={metrics.errored_total} "
        f"{dict(metrics.errored) or ''} requests={metrics.requests} rate_limited={metrics.rate_limited} "
        f"retries={metrics.retries} attempts={metrics.attempts}"
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def _later_chunks(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """A source can also fail mid-stream (a dropped connection, a statement timeout): one line, not
    the driver's traceback, and a retryable failure, since the retry starts the staging afresh."""
    try:
        yield from frames
    except Exception as err:  # the driver's own exception types vary by warehouse
        raise AirflowException(f"Reading the source failed after its first chunk: {_one_line(err)}") from None


def _one_line(err: Exception) -> str:
    """The first line of a driver's error, with any value it echoed that looks like an identifier blanked."""
    text = str(err).strip()
    return f"{type(err).__name__}: {scrub_identifiers(text.splitlines()[0])[:300] if text else 'no message'}"
