"""TikTokAudienceSensor: wait until an audience exists, is valid, or is large enough."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_tiktok.audience.readiness import AudienceConditions, audience_label
from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.triggers.tiktok import TikTokAudienceTrigger, check_audience

if TYPE_CHECKING:
    from airflow.sdk import Context


class TikTokAudienceSensor(BaseSensorOperator):
    """
    Wait for a TikTok Custom Audience, in ``poke``, ``reschedule`` or deferrable mode.

    :param tiktok_conn_id: ``tiktok`` connection.
    :param advertiser_id: ad account; defaults to the connection's ``advertiser_id``.
    :param audience_id: the audience to watch, or
    :param audience_name: its exact name (the oldest wins if several share it).
    :param require_valid: wait until ``is_valid`` (no longer calculating).
    :param min_size: wait until ``cover_num`` reaches this size.
    :param fail_if_missing: fail at once when the named audience does not exist instead of waiting for it
        (always the case for an ``audience_id``: an unknown id was deleted and cannot reappear).
    :param fail_if_expiring: fail when TikTok reports the audience as expiring.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``); the audience is
        checked once first, so a ready audience never costs a trigger round-trip. Failures are the same
        in every mode: a missing (when told to fail), expiring or inaccessible audience fails without retry.

    Pushes ``{audience_id, name, size, is_valid, is_expiring, expired_time}`` to XCom on success.
    """

    template_fields: Sequence[str] = ("tiktok_conn_id", "advertiser_id", "audience_id", "audience_name")
    ui_color = "#FE2C55"

    def __init__(
        self,
        *,
        tiktok_conn_id: str = TikTokHook.default_conn_name,
        advertiser_id: str | None = None,
        audience_id: str | None = None,
        audience_name: str | None = None,
        require_valid: bool = True,
        min_size: int | None = None,
        fail_if_missing: bool = False,
        fail_if_expiring: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tiktok_conn_id = tiktok_conn_id
        self.advertiser_id = advertiser_id
        self.audience_id = audience_id
        self.audience_name = audience_name
        # An id that does not resolve was deleted: it cannot appear later, so never wait for it.
        missing_is_fatal = fail_if_missing or bool(audience_id)
        self.conditions = AudienceConditions(require_valid, min_size, missing_is_fatal, fail_if_expiring)
        self.deferrable = deferrable

    @property
    def label(self) -> str:
        return audience_label(self.audience_id, self.audience_name)

    def _hook_and_advertiser(self) -> tuple[TikTokHook, str]:
        if not self.audience_id and not self.audience_name:
            raise AirflowFailException("Name the audience: set audience_id or audience_name.")
        hook = TikTokHook(self.tiktok_conn_id)
        try:
            return hook, hook.advertiser_id(self.advertiser_id)
        except TikTokConfigurationError as err:
            raise AirflowFailException(str(err)) from None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        checked = self.poke(context)  # no trigger round-trip when the audience is ready already
        if isinstance(checked, PokeReturnValue) and checked.is_done:
            return checked.xcom_value
        _, advertiser_id = self._hook_and_advertiser()
        self.defer(
            trigger=TikTokAudienceTrigger(
                self.tiktok_conn_id,
                advertiser_id,
                self.audience_id,
                self.audience_name,
                conditions=asdict(self.conditions),
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        hook, advertiser_id = self._hook_and_advertiser()
        readiness = asyncio.run(
            check_audience(hook, advertiser_id, self.audience_id, self.audience_name, self.conditions)
        )
        if readiness.failure:
            raise AirflowFailException(readiness.failure)
        if not readiness.met:
            self.log.info("Waiting for %s", readiness.waiting_for)
            return False
        return PokeReturnValue(is_done=True, xcom_value=readiness.summary)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """The trigger ends only when waiting cannot help any more, so an error fails as a poke would."""
        if event.get("status") != "success":
            raise AirflowFailException(f"TikTok audience {self.label}: {event.get('message')}")
        return event["audience"]
