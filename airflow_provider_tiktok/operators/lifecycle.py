"""Audience lifecycle beyond members: lookalikes, sharing with other ad accounts, deletion.

Each operator resolves audiences by id or exact name, is safe to re-run (a re-run reuses or skips what
the first run did), pushes the audience it worked on for the Ads Manager link, and fails like
``SyncAudienceOperator``: set-up and refusals without retry, rate limits and outages retryably.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_tiktok.audience.readiness import AudienceConditions, Readiness, audience_label
from airflow_provider_tiktok.exceptions import TikTokAPIError, TikTokConfigurationError
from airflow_provider_tiktok.hooks.tiktok import LookalikeSize, TikTokHook, check_audience_name, oldest_named
from airflow_provider_tiktok.links.tiktok import AUDIENCE_XCOM_KEY, TikTokAudienceLink
from airflow_provider_tiktok.triggers.tiktok import TikTokAudienceTrigger, check_audience

if TYPE_CHECKING:
    from airflow.sdk import Context

#: TikTok's documented minimum for a lookalike seed (the emulator's ``min_lookalike_seed``).
MIN_LOOKALIKE_SEED = 100


@contextmanager
def airflow_errors() -> Iterator[None]:
    """Typed TikTok errors as Airflow outcomes: retry only what waiting can fix."""
    try:
        yield
    except TikTokConfigurationError as err:
        raise AirflowFailException(str(err)) from None
    except TikTokAPIError as err:
        raise (AirflowException if err.retryable else AirflowFailException)(str(err)) from None


def is_lookalike(audience: dict[str, Any]) -> bool:
    return "lookalike_spec" in audience or "lookalike" in str(audience.get("audience_type", "")).lower()


class _AudienceTask(BaseOperator):
    """What the lifecycle operators share: the connection, the ad account, error mapping, the link."""

    template_fields: Sequence[str] = ("tiktok_conn_id", "advertiser_id")
    ui_color = "#25F4EE"

    def __init__(
        self, *, tiktok_conn_id: str = TikTokHook.default_conn_name, advertiser_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tiktok_conn_id = tiktok_conn_id
        self.advertiser_id = advertiser_id

    def execute(self, context: Context) -> Any:
        with airflow_errors(), closing(TikTokHook(self.tiktok_conn_id)) as hook:
            return self.run(context, hook, hook.advertiser_id(self.advertiser_id))

    def run(self, context: Context, hook: TikTokHook, advertiser_id: str) -> Any:
        raise NotImplementedError

    @staticmethod
    def push_link(context: Context, advertiser_id: str, audience_id: str) -> None:
        context["ti"].xcom_push(
            key=AUDIENCE_XCOM_KEY, value={"advertiser_id": advertiser_id, "audience_id": audience_id}
        )


def owned_audience(
    hook: TikTokHook, advertiser_id: str, audience_id: str | None, audience_name: str | None
) -> dict[str, Any]:
    """The advertiser's own audience by id or exact name, or a configuration error saying why not."""
    if not audience_id and not audience_name:
        raise TikTokConfigurationError("Name the audience: set audience_id or audience_name.")
    found = hook.find_audience(advertiser_id, audience_id=audience_id, audience_name=audience_name)
    label = audience_label(audience_id, audience_name)
    if found is None:
        raise TikTokConfigurationError(f"Audience {label} was not found for advertiser {advertiser_id}.")
    if found.get("is_creator") is False:
        raise TikTokConfigurationError(
            f"Audience {label} is shared with advertiser {advertiser_id}, not owned by it; act from its owner."
        )
    return found


class CreateLookalikeAudienceOperator(_AudienceTask):
    """
    Create a lookalike of a seed audience, once: a re-run (or a racing task) reuses the lookalike of that name.

    :param lookalike_name: exact name of the lookalike (also how a re-run finds it).
    :param seed_audience_id: the seed, or
    :param seed_audience_name: its exact name.
    :param location_ids: TikTok lookalike location ids, e.g. ``["6252001"]`` (United States).
    :param audience_size: ``NARROW``, ``BALANCED`` or ``BROAD``.
    :param include_source: include the seed's members in the lookalike.
    :param mobile_os: ``ALL``, ``ANDROID`` or ``IOS``.
    :param placements: e.g. ``["TIKTOK"]``.
    :param wait_for_seed: first wait until the seed is valid and has ``seed_min_size`` members.
    :param seed_min_size: members the seed needs (TikTok's minimum is 100).
    :param poke_interval: seconds between looks at the seed while waiting.
    :param wait_timeout: how long to wait for the seed before failing.
    :param deferrable: wait in the triggerer rather than in a worker slot.

    Returns ``{advertiser_id, audience_id, name, source_audience_id, created}``.
    """

    template_fields: Sequence[str] = (
        *_AudienceTask.template_fields,
        "lookalike_name",
        "seed_audience_id",
        "seed_audience_name",
        "location_ids",
    )
    operator_extra_links = (TikTokAudienceLink(),)

    def __init__(
        self,
        *,
        lookalike_name: str,
        seed_audience_id: str | None = None,
        seed_audience_name: str | None = None,
        location_ids: Sequence[str],
        audience_size: LookalikeSize = "BALANCED",
        include_source: bool = False,
        mobile_os: str = "ALL",
        placements: Sequence[str] = ("TIKTOK",),
        wait_for_seed: bool = True,
        seed_min_size: int = MIN_LOOKALIKE_SEED,
        poke_interval: float = 60.0,
        wait_timeout: timedelta = timedelta(hours=12),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lookalike_name = lookalike_name
        self.seed_audience_id = seed_audience_id
        self.seed_audience_name = seed_audience_name
        self.location_ids = list(location_ids)
        self.audience_size = audience_size
        self.include_source = include_source
        self.mobile_os = mobile_os
        self.placements = list(placements)
        self.wait_for_seed = wait_for_seed
        self.seed_min_size = seed_min_size
        self.poke_interval = poke_interval
        self.wait_timeout = wait_timeout
        self.deferrable = deferrable

    @property
    def seed_conditions(self) -> AudienceConditions:
        # A seed named by id that does not resolve was deleted; a named one may still be created upstream.
        return AudienceConditions(
            require_valid=True, min_size=self.seed_min_size, fail_if_missing=bool(self.seed_audience_id)
        )

    def run(self, context: Context, hook: TikTokHook, advertiser_id: str) -> dict[str, Any]:
        if not self.seed_audience_id and not self.seed_audience_name:
            raise TikTokConfigurationError("Name the seed: set seed_audience_id or seed_audience_name.")
        check_audience_name(self.lookalike_name)
        existing = hook.find_audience(advertiser_id, audience_name=self.lookalike_name)
        if existing is not None:
            return self._reuse(context, hook, advertiser_id, existing)
        if not self.wait_for_seed:
            seed = owned_or_shared_seed(hook, advertiser_id, self.seed_audience_id, self.seed_audience_name)
            return self._create(context, hook, advertiser_id, str(seed["audience_id"]))
        readiness = self._look_at_seed(hook, advertiser_id)
        if not readiness.met and self.deferrable:
            self.defer(
                trigger=TikTokAudienceTrigger(
                    self.tiktok_conn_id,
                    advertiser_id,
                    self.seed_audience_id,
                    self.seed_audience_name,
                    conditions=asdict(self.seed_conditions),
                    poke_interval=self.poke_interval,
                ),
                method_name="execute_complete",
                timeout=self.wait_timeout,
            )
        deadline = time.monotonic() + self.wait_timeout.total_seconds()
        while not readiness.met:
            if time.monotonic() + self.poke_interval > deadline:
                raise AirflowFailException(f"Gave up after {self.wait_timeout} waiting for {readiness.waiting_for}.")
            self.log.info("Waiting for %s", readiness.waiting_for)
            time.sleep(self.poke_interval)
            readiness = self._look_at_seed(hook, advertiser_id)
        return self._create(context, hook, advertiser_id, str((readiness.summary or {})["audience_id"]))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """The seed is ready (or waiting cannot help any more); create the lookalike in a worker."""
        if event.get("status") != "success":
            seed = audience_label(self.seed_audience_id, self.seed_audience_name)
            raise AirflowFailException(f"Seed audience {seed}: {event.get('message')}")
        with airflow_errors(), closing(TikTokHook(self.tiktok_conn_id)) as hook:
            advertiser_id = hook.advertiser_id(self.advertiser_id)
            return self._create(context, hook, advertiser_id, str(event["audience"]["audience_id"]))

    def _look_at_seed(self, hook: TikTokHook, advertiser_id: str) -> Readiness:
        readiness = asyncio.run(
            check_audience(hook, advertiser_id, self.seed_audience_id, self.seed_audience_name, self.seed_conditions)
        )
        if readiness.failure:
            raise AirflowFailException(f"Seed audience: {readiness.failure}")
        return readiness

    def _create(self, context: Context, hook: TikTokHook, advertiser_id: str, seed_id: str) -> dict[str, Any]:
        created: list[str] = []

        def create_lookalike(advertiser: str, name: str) -> str:
            created.append(
                hook.create_lookalike(
                    advertiser,
                    name,
                    seed_id,
                    location_ids=self.location_ids,
                    audience_size=self.audience_size,
                    include_source=self.include_source,
                    mobile_os=self.mobile_os,  # type: ignore[arg-type]
                    placements=self.placements,
                )
            )
            return created[-1]

        audience_id = hook.create_audience_once(advertiser_id, self.lookalike_name, create=create_lookalike)
        return self._result(context, advertiser_id, audience_id, seed_id, created=created == [audience_id])

    def _reuse(
        self, context: Context, hook: TikTokHook, advertiser_id: str, existing: dict[str, Any]
    ) -> dict[str, Any]:
        """A re-run: the lookalike of this name is ours if it is a lookalike of the same seed."""
        audience_id = str(existing["audience_id"])
        if not is_lookalike(existing):
            raise TikTokConfigurationError(
                f"Audience {self.lookalike_name!r} ({audience_id}) exists and is not a lookalike; choose another name."
            )
        source = str((existing.get("lookalike_spec") or {}).get("source_audience_id") or "")
        seed = hook.find_audience(
            advertiser_id, audience_id=self.seed_audience_id, audience_name=self.seed_audience_name
        )
        if seed is not None and source and source != str(seed["audience_id"]):
            raise TikTokConfigurationError(
                f"Lookalike {self.lookalike_name!r} ({audience_id}) is based on audience {source}, not on the seed "
                f"{seed['audience_id']}; choose another name or delete it first."
            )
        self.log.info("Lookalike %r exists (%s): reusing it.", self.lookalike_name, audience_id)
        return self._result(context, advertiser_id, audience_id, source or None, created=False)

    def _result(
        self, context: Context, advertiser_id: str, audience_id: str, seed_id: str | None, *, created: bool
    ) -> dict[str, Any]:
        self.push_link(context, advertiser_id, audience_id)
        return {
            "advertiser_id": advertiser_id,
            "audience_id": audience_id,
            "name": self.lookalike_name,
            "source_audience_id": seed_id,
            "created": created,
        }


def owned_or_shared_seed(
    hook: TikTokHook, advertiser_id: str, audience_id: str | None, audience_name: str | None
) -> dict[str, Any]:
    """A seed may be shared with the advertiser; it must exist and not itself be a lookalike."""
    seed = hook.find_audience(advertiser_id, audience_id=audience_id, audience_name=audience_name)
    label = audience_label(audience_id, audience_name)
    if seed is None:
        raise TikTokConfigurationError(f"Seed audience {label} was not found for advertiser {advertiser_id}.")
    if is_lookalike(seed):
        raise TikTokConfigurationError(f"Seed audience {label} is a lookalike; TikTok cannot seed from one.")
    return seed


class ShareAudienceOperator(_AudienceTask):
    """
    Share an audience with other ad accounts of the same Business Center (sharing again changes nothing).

    :param audience_id: the audience to share, or
    :param audience_name: its exact name.
    :param shared_advertiser_ids: the ad accounts that may then use it.

    Returns ``{advertiser_id, audience_id, shared_advertiser_ids}``.
    """

    template_fields: Sequence[str] = (
        *_AudienceTask.template_fields,
        "audience_id",
        "audience_name",
        "shared_advertiser_ids",
    )
    operator_extra_links = (TikTokAudienceLink(),)

    def __init__(
        self,
        *,
        audience_id: str | None = None,
        audience_name: str | None = None,
        shared_advertiser_ids: Sequence[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.audience_id = audience_id
        self.audience_name = audience_name
        self.shared_advertiser_ids = list(shared_advertiser_ids)

    def run(self, context: Context, hook: TikTokHook, advertiser_id: str) -> dict[str, Any]:
        targets = list(dict.fromkeys(str(a) for a in self.shared_advertiser_ids if str(a).strip()))
        if not targets:
            raise TikTokConfigurationError("shared_advertiser_ids is empty: name the ad accounts to share with.")
        if advertiser_id in targets:
            raise TikTokConfigurationError(f"Advertiser {advertiser_id} owns the audience; share with other accounts.")
        audience_id = str(owned_audience(hook, advertiser_id, self.audience_id, self.audience_name)["audience_id"])
        hook.share_audiences(advertiser_id, [audience_id], targets)
        self.log.info("Shared audience %s with %s.", audience_id, ", ".join(targets))
        self.push_link(context, advertiser_id, audience_id)
        return {"advertiser_id": advertiser_id, "audience_id": audience_id, "shared_advertiser_ids": targets}


class DeleteAudienceOperator(_AudienceTask):
    """
    Delete audiences by id or exact name; ones already gone are skipped, so a re-run succeeds.

    Refuses to delete an audience applied to an enabled ad group (TikTok's apply log) unless ``force``:
    deleting it would silently change who those ads reach.

    :param audience_ids: audiences to delete, and/or
    :param audience_names: their exact names (the oldest of a name, as elsewhere).
    :param force: delete even audiences in use by enabled ad groups.

    Returns ``{advertiser_id, deleted, missing}``.
    """

    template_fields: Sequence[str] = (*_AudienceTask.template_fields, "audience_ids", "audience_names")
    ui_color = "#FE2C55"

    def __init__(
        self,
        *,
        audience_ids: Sequence[str] = (),
        audience_names: Sequence[str] = (),
        force: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.audience_ids = list(audience_ids)
        self.audience_names = list(audience_names)
        self.force = force

    def run(self, context: Context, hook: TikTokHook, advertiser_id: str) -> dict[str, Any]:
        if not self.audience_ids and not self.audience_names:
            raise TikTokConfigurationError("Name the audiences to delete: set audience_ids or audience_names.")
        visible = hook.list_audiences(advertiser_id)  # one listing resolves every id and name
        by_id = {str(a.get("audience_id")): a for a in visible}
        wanted = [(str(a), by_id.get(str(a))) for a in self.audience_ids]
        wanted += [(repr(name), oldest_named(visible, name)) for name in self.audience_names]
        missing = [label for label, audience in wanted if audience is None]
        found = {str(a["audience_id"]): a for _, a in wanted if a is not None}
        shared = [a for a, details in found.items() if details.get("is_creator") is False]
        if shared:
            raise TikTokConfigurationError(
                f"Audience(s) {', '.join(shared)} are shared with advertiser {advertiser_id}, not owned by it; "
                "delete them from their owner."
            )
        ids = list(found)
        in_use = hook.active_adgroups(advertiser_id, ids) if ids and not self.force else {}
        if in_use:
            uses = "; ".join(f"{a} in ad group(s) {', '.join(groups)}" for a, groups in in_use.items())
            raise AirflowFailException(
                f"Not deleting: audiences are applied to enabled ad groups ({uses}). Detach them, or set force=True."
            )
        if missing:
            self.log.info("Already gone (nothing to delete): %s", ", ".join(missing))
        if ids:
            hook.delete_audiences(advertiser_id, ids)
            self.log.info("Deleted audience(s) %s.", ", ".join(ids))
        return {"advertiser_id": advertiser_id, "deleted": ids, "missing": missing}
