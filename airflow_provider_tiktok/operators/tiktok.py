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

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_tiktok.audience import FieldRules, PrepareOptions, UserBatch
from airflow_provider_tiktok.audience.batching import MAX_BATCH_SIZE, validate_batch_size
from airflow_provider_tiktok.exceptions import (
    TikTokAPIError,
    TikTokConfigurationError,
    TikTokError,
    TikTokSourceError,
    TikTokWarehouseError,
)
from airflow_provider_tiktok.hooks.tiktok import MAPPING_ACTIONS, TikTokHook, check_audience_name
from airflow_provider_tiktok.lineage import announce_refresh, audience_alias, sync_lineage
from airflow_provider_tiktok.links.tiktok import AUDIENCE_XCOM_KEY, TikTokAudienceLink
from airflow_provider_tiktok.sync.attempt import AttemptLimits, UploadAttempt
from airflow_provider_tiktok.sync.launch import LaunchChecks, beside
from airflow_provider_tiktok.sync.ledger import (
    DEFAULT_LEDGER_RETENTION,
    BatchTotals,
    Ledger,
    Status,
    SyncKey,
    SyncRecord,
)
from airflow_provider_tiktok.sync.mirror import MirrorSettings
from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS
from airflow_provider_tiktok.sync.results import MIRROR, RejectsTable, ResultsTable, metrics_of, summary, xcom_value
from airflow_provider_tiktok.sync.retry_window import DEFAULT_RETRY_WINDOW
from airflow_provider_tiktok.sync.staging import Preparation, Source
from airflow_provider_tiktok.sync.timing import PhaseClock, long_lived_objects_frozen
from airflow_provider_tiktok.sync.upload import Uploader, check_upload_method, uploader_for
from airflow_provider_tiktok.warehouse import Warehouse

if TYPE_CHECKING:
    from airflow.sdk import Context


class SyncAudienceOperator(BaseOperator):
    """
    Sync users from a warehouse query (or DataFrames) into a TikTok Custom Audience.

    :param tiktok_conn_id: ``tiktok`` connection (token; default advertiser in its extras).
    :param advertiser_id: ad account; defaults to the connection's ``advertiser_id``.
    :param advertiser_ids: instead of ``advertiser_id``, several ad accounts (templated; a list, or a string of
        comma-separated ids); the first is the primary. ``segment``: each account gets an audience named
        ``audience_name`` (found or created) and every request carries all of them, so more accounts cost no
        more requests. ``file``: the primary's audience is shared with the others (same Business Center).
        The results row names every account. See the README, "Several ad accounts".
    :param audience_id: sync into this existing audience (one ad account only), or
    :param audience_name: find the audience by exact name (created if missing and allowed).
    :param create_audience_if_missing: create ``audience_name`` when it does not exist.
    :param action: ``add`` users to the audience, ``remove`` them, or ``mirror``: after the run the members
        this sync manages equal the query's valid users (see the README, "Keeping an audience equal to a query").
    :param upload_method: ``segment`` (the Segment API, default) or ``file`` (customer files: one id type,
        batches of at least 1,000; see the README, "Customer-file uploads").
    :param sql: query selecting the users, read in chunks from ``warehouse_conn_id``.
    :param parameters: values for the query's ``:named`` placeholders (templated; e.g. the data interval).
    :param warehouse_conn_id: common-sql connection holding the source, the results table and the ledger.
    :param source: instead of ``sql``, a DataFrame or an iterable of DataFrames (programmatic use).
    :param user_key_column: column identifying a user (de-duplication).
    :param match_fields: match field -> source column, e.g. ``{"email": "email", "phone": "phone_number"}``.
    :param batch_size: users per request, at most 10,000.
    :param max_qps: this task's ceiling within TikTok's 50 requests/s per token.
    :param results_table: table (in the warehouse) receiving one metrics row per task run.
    :param rejects_table: optional table receiving one row per user not synced: user key, reason, field
        (never an identifier), so data teams can fix their data.
    :param ledger_table: names the ledger's two tables: ``<ledger_table>`` (one row per sync) and
        ``<ledger_table>_batches`` (staged batches and their fates).
    :param ledger_retention: how long ended syncs stay in the ledger (their payloads go as soon as each
        batch's fate is final); older ones are removed by the next sync on the same ledger.
    :param snapshot_table: mirror mode's membership snapshot (binary digests of what was sent, by user key).
    :param max_removal_fraction: mirror mode refuses a run that removes more than this share of the audience,
    :param min_audience_size: or that would leave fewer users (TikTok's floor for ad groups), unless
    :param allow_large_removal: is set. Nothing is sent when a run is refused.
    :param dry_run: validate and count outcomes (mirror: print the plan) without creating or sending anything.
    :param retry_window: how long after the first attempt pending users may still be retried.
    :param attempt_budget: stop starting new batches after this long; the rest waits for an Airflow retry.
    :param request_retry_limit: attempts per request for rate-limited or transient answers, within an attempt.
    :param request_retry_seconds: longest time one request keeps retrying before its batch waits for the next attempt.
    :param concurrency: requests in flight at once.
    :param chunk_size: source rows per chunk.
    :param prepare_workers: chunks normalised and hashed at once, on threads (their kernels release the GIL), while
        the next chunk is read.
    :param default_phone_country: ISO country for national phone numbers.
    :param phone_country_column: source column with each user's ISO country (falls back to the default).
    :param entered_at_column: source column with when each user entered the step; the results row then
        records the lag from entry to TikTok's acknowledgement (p50, p95, max seconds).
    :param device_id_hash: ``sha256`` (default) or ``md5`` for IDFA/GAID.
    :param accept_hashed: pass values that already are digests through unchanged.
    :param normalize_gmail: strip dots and ``+tags`` from Gmail addresses before hashing.
    """

    template_fields: Sequence[str] = (
        "tiktok_conn_id",
        "advertiser_id",
        "advertiser_ids",
        "audience_id",
        "audience_name",
        "sql",
        "parameters",
        "warehouse_conn_id",
        "match_fields",
        "results_table",
        "rejects_table",
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
        advertiser_ids: Sequence[str] | str | None = None,
        audience_id: str | None = None,
        audience_name: str | None = None,
        create_audience_if_missing: bool = True,
        action: str = "add",
        upload_method: str = "segment",
        sql: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        warehouse_conn_id: str | None = None,
        source: pd.DataFrame | Iterable[pd.DataFrame] | None = None,
        user_key_column: str = "user_id",
        match_fields: Mapping[str, str] | None = None,
        batch_size: int = MAX_BATCH_SIZE,
        max_qps: float = TIKTOK_MAX_QPS,
        results_table: str = "tiktok_audience_sync_results",
        rejects_table: str | None = None,
        ledger_table: str = "tiktok_audience_sync_ledger",
        ledger_retention: timedelta = DEFAULT_LEDGER_RETENTION,
        snapshot_table: str = "tiktok_audience_snapshot",
        max_removal_fraction: float = 0.5,
        min_audience_size: int = 1000,
        allow_large_removal: bool = False,
        dry_run: bool = False,
        retry_window: timedelta = DEFAULT_RETRY_WINDOW,
        attempt_budget: timedelta = timedelta(minutes=30),
        request_retry_limit: int = 8,
        request_retry_seconds: float = 300.0,
        concurrency: int = 8,
        chunk_size: int = 50_000,
        prepare_workers: int = 2,
        default_phone_country: str | None = None,
        phone_country_column: str | None = None,
        entered_at_column: str | None = None,
        device_id_hash: str = "sha256",
        accept_hashed: bool = False,
        normalize_gmail: bool = False,
        **kwargs: Any,
    ) -> None:
        # Which audience a sync refreshes is known only at run time (mapped tasks), so it declares the
        # alias and adds an event for ``audience_asset(advertiser, name)`` through it.
        kwargs["outlets"] = [*(kwargs.get("outlets") or []), audience_alias()]
        super().__init__(**kwargs)
        self.tiktok_conn_id = tiktok_conn_id
        self.advertiser_id = advertiser_id
        self.advertiser_ids = advertiser_ids
        self.audience_id = audience_id
        self.audience_name = audience_name
        self.create_audience_if_missing = create_audience_if_missing
        self.action = action
        self.upload_method = upload_method
        self.sql = sql
        self.parameters = dict(parameters or {})
        self.warehouse_conn_id = warehouse_conn_id
        self.source = source
        self.user_key_column = user_key_column
        self.match_fields = dict(match_fields or {})
        self.batch_size = batch_size
        self.max_qps = max_qps
        self.results_table = results_table
        self.rejects_table = rejects_table
        self.ledger_table = ledger_table
        self.ledger_retention = ledger_retention
        self.snapshot_table = snapshot_table
        self.max_removal_fraction = max_removal_fraction
        self.min_audience_size = min_audience_size
        self.allow_large_removal = allow_large_removal
        self.dry_run = dry_run
        self.retry_window = retry_window
        self.attempt_budget = attempt_budget
        self.request_retry_limit = request_retry_limit
        self.request_retry_seconds = request_retry_seconds
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.prepare_workers = prepare_workers
        self.entered_at_column = entered_at_column
        self.field_rules = FieldRules(
            default_phone_country, device_id_hash, accept_hashed, normalize_gmail, phone_country_column
        )

    def execute(self, context: Context) -> dict[str, Any]:
        clock = PhaseClock()
        try:
            preparation = self._validate_settings()
            hook = TikTokHook(
                self.tiktok_conn_id,
                request_retry_limit=self.request_retry_limit,
                request_retry_seconds=self.request_retry_seconds,
                pool_maxsize=max(32, self.concurrency),
            )
            with closing(hook), long_lived_objects_frozen():
                hook.share_rate_budget(self.max_qps)
                return self._sync(context, hook, preparation, clock)
        except TikTokConfigurationError as err:
            raise AirflowFailException(str(err)) from None
        except (TikTokSourceError, TikTokWarehouseError) as err:
            raise AirflowException(str(err)) from None
        except TikTokAPIError as err:
            raise (AirflowException if err.retryable else AirflowFailException)(str(err)) from None

    def _validate_settings(self) -> Preparation:
        """Everything that can be refused without a network call, each with one clear message."""
        if self.action not in (*MAPPING_ACTIONS, MIRROR):
            raise TikTokConfigurationError(f"action must be 'add', 'remove' or 'mirror', not {self.action!r}.")
        if not self.audience_id and not self.audience_name:
            raise TikTokConfigurationError("Name the audience: set audience_id or audience_name.")
        self._check_accounts()
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
        check_upload_method(self.upload_method, options.id_schema, self.batch_size)
        mirror = None
        if self.action == MIRROR:
            limits = (self.max_removal_fraction, self.min_audience_size, self.allow_large_removal)
            mirror = MirrorSettings(self.snapshot_table, *limits)
        return Preparation(
            options, self.batch_size, self.prepare_workers, mirror=mirror, entered_at_column=self.entered_at_column
        )

    def _listed_accounts(self) -> list[str] | None:
        """``advertiser_ids`` as rendered: a list, or text holding one (JSON, or Python's form, which is what a
        Jinja template of a list renders to) or ids separated by commas or spaces; None if unset."""
        value = self.advertiser_ids
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            try:
                value = ast.literal_eval(text) if text.startswith("[") else re.split(r"[\s,;]+", text)
            except (ValueError, SyntaxError):
                raise TikTokConfigurationError(
                    f"advertiser_ids is not a list of ids: {text!r}. Render a list with `| tojson`, or write the "
                    "ids separated by commas."
                ) from None
        accounts = [str(item).strip() for item in value if str(item).strip()]
        not_ids = [account for account in accounts if not account.isdigit()]
        if not_ids:
            raise TikTokConfigurationError(f"advertiser_ids holds {not_ids}: ad account ids are digits only.")
        return accounts

    def _check_accounts(self) -> None:
        accounts = self._listed_accounts()
        if accounts is None:
            return
        if self.advertiser_id:
            raise TikTokConfigurationError("Set advertiser_id or advertiser_ids, not both.")
        if not accounts:
            raise TikTokConfigurationError("advertiser_ids is empty: name at least one ad account.")
        if len(set(accounts)) != len(accounts):
            raise TikTokConfigurationError(f"advertiser_ids names an ad account twice: {accounts}.")
        if len(accounts) > 1 and self.action == MIRROR:
            raise TikTokConfigurationError(
                "action='mirror' keeps one audience equal to the query, from a snapshot of that audience: mirror "
                "each ad account with a task of its own (e.g. .expand(advertiser_id=[...]))."
            )
        if len(accounts) > 1 and self.audience_id:
            raise TikTokConfigurationError(
                "audience_id names one ad account's audience; with several advertiser_ids set audience_name "
                "(each account's audience of that name is found or created)."
            )

    def _sync(self, context: Context, hook: TikTokHook, preparation: Preparation, clock: PhaseClock) -> dict[str, Any]:
        ti = context["ti"]
        warehouse = Warehouse(self.warehouse_conn_id)  # type: ignore[arg-type]
        ledger = Ledger(warehouse, self.ledger_table, SyncKey(ti.dag_id, ti.task_id, ti.run_id, ti.map_index))
        results = ResultsTable(warehouse, self.results_table)
        ledger.ensure_tables()
        results.ensure()
        if preparation.mirror is not None:
            preparation.mirror.snapshot(warehouse, "", None).ensure()
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
            uploader = self._uploader(hook, record, preparation)
            attempt = UploadAttempt(
                hook, uploader, ledger, results, record, preparation, clock, self._limits, self.log.info
            )
            return self._upload_and_report(context, attempt, ledger.pending_batches())
        if self.rejects_table:
            rejects = RejectsTable(warehouse, self.rejects_table, ledger.key)
            rejects.ensure()
            rejects.forget()
            preparation = replace(preparation, rejects=rejects.append)
        advertiser_id, *others = self._listed_accounts() or [hook.advertiser_id(self.advertiser_id)]
        record = SyncRecord.new(advertiser_id, self.audience_id, self.audience_name, self.action, others)
        uploader = self._uploader(hook, record, preparation)
        results.open_row(ledger.key, record)  # a table refusing our row stops the sync before any call
        with results.failed_if_raises(ledger.key, record):
            launch = LaunchChecks(lambda: self._launch_checks(hook, record))
            needs = (self.entered_at_column,) if self.entered_at_column else ()
            source = Source(self.sql, self.parameters, self.source, self.chunk_size, needs)
            try:
                with clock.phase("read"):
                    frames = launch.guard(source.chunks(warehouse, preparation.options))
            except TikTokError:
                launch.wait()  # a refused token says more than the query it kept from running
                raise
            clock.chunk_read()
            if self.dry_run:
                launch.wait()
        if self.dry_run:
            totals = preparation.count_only(frames, record, warehouse, launch.wait)
            return self._dry_run(results, ledger.key, record, totals)

        def settle_audience(first_batch: UserBatch | None) -> None:
            """The first write to TikTok, once the checks passed and the source proved readable: the audience
            is created with the first batch when missing, then reached from the other accounts."""
            launch.wait()
            if first_batch is not None and record.audience_id is None:
                # Named in the record first: if reaching the other accounts fails, the results row still
                # says which audience the first batch went to.
                record.audience_id = uploader.create_audience(str(record.audience_name), first_batch)
            if record.audience_id is not None:
                uploader.reach_other_accounts(str(record.audience_name), record.audience_id)

        batches = preparation.stage(frames, ledger, record, clock, settle_audience, launch.wait)
        attempt = UploadAttempt(
            hook, uploader, ledger, results, record, preparation, clock, self._limits, self.log.info
        )
        return self._upload_and_report(context, attempt, batches)

    def _uploader(self, hook: TikTokHook, record: SyncRecord, preparation: Preparation) -> Uploader:
        """The chosen path's uploader; it fills in the record's other accounts' audiences."""
        id_schema = preparation.options.id_schema
        return uploader_for(self.upload_method, hook, record.advertiser_id, id_schema, record.other_audiences)

    @property
    def _limits(self) -> AttemptLimits:
        return AttemptLimits(self.retry_window, self.attempt_budget, self.concurrency)

    def _launch_checks(self, hook: TikTokHook, record: SyncRecord) -> None:
        """The token reaches every ad account, and the audience is found or may be created; reads only. The
        access check and the lookup go out together (each is a round trip), a refused token reported first."""
        access = beside(lambda: hook.check_access(record.advertiser_ids), "tiktok-access")
        try:
            self._find_audience(hook, record)
        finally:
            access.result()

    def _find_audience(self, hook: TikTokHook, record: SyncRecord) -> None:
        """Fill in the target audience, or make sure it may be created once there are users to send."""
        found = hook.find_audience(record.advertiser_id, audience_id=self.audience_id, audience_name=self.audience_name)
        if found is not None:
            record.audience_id, record.audience_name = str(found["audience_id"]), found.get("name")
        elif self.audience_id:
            raise TikTokConfigurationError(f"Audience {self.audience_id} was not found for {record.advertiser_id}.")
        else:
            self._may_create(record.advertiser_id)
        if self.upload_method != "segment":
            return  # the other accounts share the primary's audience
        for advertiser in record.other_audiences:
            found = hook.find_audience(advertiser, audience_name=self.audience_name)
            if found is not None:
                record.other_audiences[advertiser] = str(found["audience_id"])
            else:
                self._may_create(advertiser)

    def _may_create(self, advertiser_id: str) -> None:
        """Refuse, before anything is sent, an audience that is missing and may not be created."""
        if self.action == "remove" or not self.create_audience_if_missing:
            raise TikTokConfigurationError(
                f"Audience {self.audience_name!r} does not exist for advertiser {advertiser_id} "
                f"({'nothing to remove from' if self.action == 'remove' else 'create_audience_if_missing is off'})."
            )

    def _upload_and_report(
        self,
        context: Context,
        attempt: UploadAttempt,
        batches: Iterable[UserBatch],
    ) -> dict[str, Any]:
        outcome = attempt.run(batches)
        record = self._synced = attempt.record
        context["ti"].xcom_push(
            key=AUDIENCE_XCOM_KEY,
            value={
                "advertiser_id": record.advertiser_id,
                "audience_id": record.audience_id,
                "advertiser_ids": record.advertiser_ids,
                "audience_ids": record.audience_ids,
            },
        )
        self.log.info("Sync metrics: %s", summary(outcome.metrics))
        if outcome.failure:
            raise AirflowFailException(outcome.failure)
        if outcome.pending:
            raise AirflowException(
                f"{outcome.pending} users still pending after this attempt "
                f"({outcome.last_retryable or 'attempt budget used'}); "
                "Airflow will retry and resume with the unsent batches."
            )
        result = xcom_value(outcome.metrics, record)
        ti = context["ti"]
        announce_refresh(context["outlet_events"], result, ti.dag_id, ti.run_id, ti.map_index)
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the tables the query reads -> ``tiktok://<advertiser>`` ``audiences/<id>`` per ad account."""
        record: SyncRecord | None = getattr(self, "_synced", None)
        if record is None:
            return None
        return sync_lineage(
            self.sql,
            self.warehouse_conn_id,
            record.advertiser_id,
            record.audience_id,
            record.audience_name,
            record.other_audiences,
        )

    def _dry_run(
        self, results: ResultsTable, key: SyncKey, record: SyncRecord, would_send: BatchTotals
    ) -> dict[str, Any]:
        """Prepared (and planned) and counted, nothing sent: what would be sent stays 'pending'."""
        record.status, record.attempts = Status.DRY_RUN, 1
        metrics = metrics_of(record, would_send)
        results.write(key, record, metrics, Status.DRY_RUN)
        self.log.info("Dry run, nothing sent: %s", summary(metrics))
        return xcom_value(metrics, record) | {"dry_run": True}
