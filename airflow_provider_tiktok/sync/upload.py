"""Send staged batches concurrently and decide each batch's fate (no Airflow imports).

Threads overlap TikTok's latency; the rate budget inside the hook keeps their total rate legal.
A batch ends acknowledged, still pending (a retryable error outlasted this attempt's retries, or the
request failed in a way nobody foresaw), or errored (TikTok refused the payload). A fatal error
(token, permission, audience gone) stops the whole upload at once. One request's failure never
discards the outcomes of the others in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.audience.identifiers import scrub_identifiers
from airflow_provider_tiktok.exceptions import TikTokAPIError, TikTokConfigurationError
from airflow_provider_tiktok.sync.file_upload import MIN_FILE_BATCH_SIZE, FileUploader, calculate_type_for
from airflow_provider_tiktok.sync.ledger import BatchOutcome, Status

if TYPE_CHECKING:
    from airflow_provider_tiktok.hooks.tiktok import TikTokHook


class Uploader(Protocol):
    """How a batch reaches TikTok: the Segment API (``SegmentUploader``) or customer files (``FileUploader``).

    Both serve the sync's other ad accounts (``others``: advertiser -> audience id, the sync record's own
    dict, filled in place): ``reach_other_accounts`` gives each its audience once the primary's exists
    (the caller runs it right after ``create_audience``, and at launch when the primary's was found).
    """

    def send(self, batch: UserBatch, audience_id: str, action: Literal["add", "remove"]) -> None: ...

    def create_audience(self, name: str, first_batch: UserBatch) -> str: ...

    def reach_other_accounts(self, name: str, audience_id: str) -> None: ...


class SegmentUploader:
    """The Segment API path: one ``segment/mapping`` request per batch, into audiences created empty.

    With several ad accounts each account has an audience of its own (found or created by name), and every
    request names all the accounts and gives each user all their audiences: more accounts, no more requests.
    """

    def __init__(self, hook: TikTokHook, advertiser_id: str, others: MutableMapping[str, str | None]) -> None:
        self.hook, self.advertiser_id, self.others = hook, advertiser_id, others

    def send(self, batch: UserBatch, audience_id: str, action: Literal["add", "remove"]) -> None:
        audience_ids = list(dict.fromkeys([audience_id, *map(str, self.others.values())]))
        self.hook.map_batch(action, [self.advertiser_id, *self.others], audience_ids, batch)

    def create_audience(self, name: str, first_batch: UserBatch) -> str:
        return self.hook.create_audience_once(self.advertiser_id, name)

    def reach_other_accounts(self, name: str, audience_id: str) -> None:
        """Find or create ``name`` in each other account still without its audience."""
        for advertiser, known in self.others.items():
            if known is None:
                self.others[advertiser] = self.hook.create_audience_once(advertiser, name)


UPLOAD_METHODS = ("segment", "file")


def uploader_for(
    method: str,
    hook: TikTokHook,
    advertiser_id: str,
    id_schema: Sequence[str],
    others: MutableMapping[str, str | None] | None = None,
) -> Uploader:
    """The chosen path's uploader for the primary ``advertiser_id``; ``others`` as ``Uploader`` says."""
    others = {} if others is None else others
    if method == "file":
        return FileUploader(hook, advertiser_id, id_schema, others)
    return SegmentUploader(hook, advertiser_id, others)


def check_upload_method(method: str, id_schema: Sequence[str], batch_size: int) -> None:
    """Refuse, before any call, what the chosen path cannot carry."""
    if method not in UPLOAD_METHODS:
        raise TikTokConfigurationError(f"upload_method must be 'segment' or 'file', not {method!r}.")
    if method == "file":
        calculate_type_for(id_schema)  # one id type per file audience
        if batch_size < MIN_FILE_BATCH_SIZE:
            raise TikTokConfigurationError(
                f"upload_method='file' needs batch_size >= {MIN_FILE_BATCH_SIZE}: TikTok refuses file updates "
                "that leave an audience below 1,000 users."
            )


@dataclass
class UploadResult:
    outcomes: list[BatchOutcome] = field(default_factory=list)
    fatal: TikTokAPIError | None = None
    last_retryable: str | None = None
    stopped_early: bool = False


@dataclass
class Progress:
    """Logs users done, users/s and (when the total is known) percent and ETA at most every ``interval`` seconds."""

    total_users: int | None
    log: Callable[[str], None]
    interval: float = 10.0
    done_users: int = 0
    _started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    def add(self, users: int) -> None:
        self.done_users += users
        now = time.monotonic()
        if now - self._last < self.interval and self.done_users != self.total_users:
            return
        self._last = now
        rate = self.done_users / max(now - self._started, 1e-9)
        if self.total_users is None:
            self.log(f"uploaded {self.done_users:,} users so far, {rate:,.0f} users/s (still staging)")
            return
        left = max(self.total_users - self.done_users, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "unknown"
        percent = 100.0 * self.done_users / self.total_users if self.total_users else 100.0
        self.log(
            f"uploaded {self.done_users:,}/{self.total_users:,} users ({percent:.1f}%), {rate:,.0f} users/s, ETA {eta}"
        )


def upload_batches(
    batches: Iterable[UserBatch],
    send: Callable[[UserBatch], None],
    *,
    concurrency: int,
    on_outcome: Callable[[BatchOutcome, UserBatch], None],
    start_deadline: float | None = None,
    progress: Progress | None = None,
) -> UploadResult:
    """Upload until done, a fatal error, or ``start_deadline`` (monotonic) passes; unsent batches stay staged."""
    result = UploadResult()
    stop = threading.Event()
    pending: set[Future] = set()
    source = iter(batches)

    def fate(batch: UserBatch) -> BatchOutcome:
        if stop.is_set():  # a fatal answer came while this batch waited for a thread: do not send it
            return BatchOutcome(batch.number, len(batch), Status.PENDING)
        try:
            send(batch)
        except TikTokAPIError as err:
            if err.fatal:
                stop.set()
                result.fatal = result.fatal or err
                return BatchOutcome(batch.number, len(batch), Status.PENDING, err.code, str(err))
            if err.retryable:
                result.last_retryable = str(err)
                return BatchOutcome(batch.number, len(batch), Status.PENDING, err.code, str(err))
            return BatchOutcome(batch.number, len(batch), Status.ERRORED, err.code, str(err))
        except Exception as err:  # unforeseen: the batch waits for the next attempt, the others go on
            result.last_retryable = f"{type(err).__name__}: {scrub_identifiers(str(err))[:300]}"
            return BatchOutcome(batch.number, len(batch), Status.PENDING, None, result.last_retryable)
        return BatchOutcome(batch.number, len(batch), Status.ACKNOWLEDGED)

    def run(batch: UserBatch) -> tuple[BatchOutcome, UserBatch]:
        return fate(batch), batch

    def collect(done: Iterable[Future]) -> None:
        for future in done:
            outcome, batch = future.result()
            result.outcomes.append(outcome)
            on_outcome(outcome, batch)
            if progress is not None and outcome.status is Status.ACKNOWLEDGED:
                progress.add(outcome.users)

    exhausted = False
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tiktok-upload") as pool:
        while not stop.is_set():
            if start_deadline is not None and time.monotonic() >= start_deadline:
                result.stopped_early = True
                break
            # Each batch leaves as soon as it arrives (staging may still be producing the next); at most
            # two batches per thread are held in memory, since staging can be far larger than RAM.
            if not exhausted and len(pending) < 2 * concurrency:
                batch = next(source, None)
                exhausted = batch is None
                if batch is not None:
                    pending.add(pool.submit(run, batch))
                finished = {future for future in pending if future.done()}
                pending -= finished
                collect(finished)
                continue
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
        done, _ = wait(pending)
        collect(done)
    return result
