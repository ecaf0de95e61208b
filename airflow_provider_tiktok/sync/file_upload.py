"""The customer-file path: each staged batch becomes one file of digests, uploaded, then APPENDed to the
audience (``add``) or REMOVEd from it (``remove``). A file is a ledger unit: one batch, one file.

For TikTok's own public Audience API (the one its official SDK exposes), when the Segment API
(``segment/mapping``) is not open to an app. Files are built in memory and sent as the request body:
no digest touches the disk, so there is nothing to clean up, and nothing of a file is ever logged.
They are plain text, one digest a line: TikTok documents .txt and .csv files and no compressed format.

An audience's files all share one ``calculate_type``. A batch with one id type maps to it; IDFA and
GAID together become TikTok's ``FIRST_*`` type (a mobile advertising id of either platform), each user
by the first of the two they have. Other mixes cannot be one file audience: use the Segment API path.

TikTok refuses APPEND / REMOVE / REPLACE that would leave an audience below 1,000 users (and changes
nothing). ``create_audience`` therefore creates the audience *from* the first batch's file (creation has
no minimum) and ``send`` then skips that batch, so a sync that fits one batch never APPENDs to a small
audience; with batches of at least ``MIN_FILE_BATCH_SIZE`` users every later APPEND lands on an audience
that holds 1,000 already. A REMOVE that would shrink an audience below 1,000 is refused for good (its
batch errors with TikTok's message): such an audience is better deleted or replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Literal

import pyarrow.compute as pc

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import TikTokConfigurationError

if TYPE_CHECKING:
    from airflow_provider_tiktok.hooks.tiktok import FileAction, TikTokHook

#: Our ``id_schema`` names -> TikTok's customer-file encryption types (``calculate_type``). Data, not code:
#: TikTok's enumeration is not fully published (SPEC §4); the emulator accepts these.
CALCULATE_TYPES: Mapping[str, str] = {
    "EMAIL_SHA256": "EMAIL_SHA256",
    "PHONE_SHA256": "PHONE_SHA256",
    "IDFA_SHA256": "IDFA_SHA256",
    "AAID_SHA256": "GAID_SHA256",
    "IDFA_MD5": "IDFA_MD5",
    "AAID_MD5": "GAID_MD5",
}
#: Both mobile advertising ids in one file: TikTok's "either platform" types.
EITHER_DEVICE_ID: Mapping[frozenset[str], str] = {
    frozenset({"IDFA_SHA256", "AAID_SHA256"}): "FIRST_SHA256",
    frozenset({"IDFA_MD5", "AAID_MD5"}): "FIRST_MD5",
}
#: TikTok refuses file updates that leave an audience below this many users.
MIN_AUDIENCE_AFTER_UPDATE = 1_000
#: Batches at least this large keep every APPEND after the first file above TikTok's minimum.
MIN_FILE_BATCH_SIZE = MIN_AUDIENCE_AFTER_UPDATE
FILE_UPDATE_ACTIONS: Mapping[str, FileAction] = {"add": "APPEND", "remove": "REMOVE"}


def calculate_type_for(id_schema: Sequence[str]) -> str:
    """The one ``calculate_type`` a batch of this ``id_schema`` is uploaded as, or a configuration error."""
    schema = tuple(id_schema)
    if len(schema) == 1 and schema[0] in CALCULATE_TYPES:
        return CALCULATE_TYPES[schema[0]]
    if frozenset(schema) in EITHER_DEVICE_ID:
        return EITHER_DEVICE_ID[frozenset(schema)]
    raise TikTokConfigurationError(
        f"upload_method='file' sends one id type per audience (TikTok: every file of an audience has the same "
        f"calculate_type), but the match fields give {', '.join(schema) or 'none'}. Match on one field (or on "
        "idfa and gaid together), or use upload_method='segment'."
    )


def file_content(batch: UserBatch) -> bytes:
    """The batch as a customer file: each user's digest (the first present, in ``id_schema`` order), one a line."""
    digests = batch.columns[0] if len(batch.columns) == 1 else pc.coalesce(*batch.columns)
    lines = digests.drop_null().to_pylist()
    return "".join(f"{digest}\n" for digest in lines).encode("ascii")


class FileUploader:
    """Send staged batches as customer files (a drop-in for ``TikTokHook.map_batch`` in the upload engine).

    Thread-safe: the engine calls ``send`` from several threads. Every ``send`` uploads its file afresh,
    so a retried batch is simply sent again: APPEND adds only users not yet in the audience and REMOVE
    removes only users in it, so a repeat changes nothing.

    :param hook: the task's hook (its retries, rate gate and counters apply to every call).
    :param advertiser_id: the ad account owning the audience.
    :param id_schema: the sync's id types; see ``calculate_type_for``.
    :param others: other ad accounts (same Business Center) -> the audience shared with them, None until
        shared; filled in place. A customer-file audience belongs to one account, so the others get it by sharing.
    """

    def __init__(
        self,
        hook: TikTokHook,
        advertiser_id: str,
        id_schema: Sequence[str],
        others: MutableMapping[str, str | None] | None = None,
    ) -> None:
        self.hook = hook
        self.advertiser_id = advertiser_id
        self.calculate_type = calculate_type_for(id_schema)
        self.others = {} if others is None else others
        self._created_from: tuple[str, int] | None = None  # (audience id, batch number) a creation consumed
        self._lock = threading.Lock()

    def upload(self, batch: UserBatch) -> str:
        """Upload the batch's file; its ``file_path``. The name says only which batch it is."""
        file_name = f"{self.calculate_type.lower()}-batch-{batch.number:06d}.txt"
        return self.hook.upload_audience_file(self.advertiser_id, self.calculate_type, file_content(batch), file_name)

    def send(self, batch: UserBatch, audience_id: str, action: Literal["add", "remove"]) -> None:
        """APPEND (``add``) or REMOVE (``remove``) the batch's users; the batch an audience was just created
        from is in it already. The action is per call, as a mirror sync's batches each carry their own."""
        if action not in FILE_UPDATE_ACTIONS:
            raise TikTokConfigurationError(f"action must be 'add' or 'remove', not {action!r}.")
        with self._lock:
            if action == "add" and self._created_from == (str(audience_id), batch.number):
                return
        file_paths = [self.upload(batch)]
        self.hook.update_audience_files(self.advertiser_id, str(audience_id), FILE_UPDATE_ACTIONS[action], file_paths)

    def create_audience(self, name: str, first_batch: UserBatch) -> str:
        """Find ``name`` or create it from ``first_batch``'s file (once, even with racing tasks); its id.

        Creating from a file is what lets a sync of fewer than 1,000 users exist at all: an APPEND to an
        empty audience would be refused. When another task's audience wins the race, ``first_batch`` is
        still sent to it as usual.
        """
        created: list[str] = []

        def create_from_first_file(advertiser_id: str, audience_name: str) -> str:
            file_path = self.upload(first_batch)
            audience_id = self.hook.create_audience_from_files(
                advertiser_id, audience_name, self.calculate_type, [file_path]
            )
            created.append(audience_id)
            return audience_id

        audience_id = self.hook.create_audience_once(self.advertiser_id, name, create=create_from_first_file)
        if created == [audience_id]:
            with self._lock:
                self._created_from = (audience_id, first_batch.number)
        return audience_id

    def reach_other_accounts(self, name: str, audience_id: str) -> None:
        """Share the audience with each other account not yet sharing it: one call, and sharing again is
        harmless (TikTok keeps one share per account), so a retry that repeats it changes nothing."""
        targets = [advertiser for advertiser, shared in self.others.items() if shared != audience_id]
        if targets:
            self.hook.share_audiences(self.advertiser_id, [audience_id], targets)
            self.others.update(dict.fromkeys(targets, audience_id))
