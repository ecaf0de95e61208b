"""TikTokAudienceSensor: wait until an audience exists, is valid, or is large enough."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_tiktok.audience.readiness import AudienceConditions, audience_summary, evaluate
from airflow_provider_tiktok.exceptions import TikTokAPIError, TikTokConfigurationError
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.triggers.tiktok import TikTokAudienceTrigger

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
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).

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
        return str(self.audience_id) if self.audience_id else repr(self.audience_name)

    def _hook_and_advertiser(self) -> tuple[TikTokHook, str]:
        if not self.audience_id and not self.audience_name:
            raise AirflowFailException("Name the audience: set audience_id or audience_name.")
        hook = TikTokHook(self.tiktok_conn_id)
        advertiser_id = self.advertiser_id or hook.default_advertiser_id
        if not advertiser_id:
            raise AirflowFailException(
                f"No ad account chosen: set advertiser_id or the 'advertiser_id' extra of {self.tiktok_conn_id!r}."
            )
        return hook, str(advertiser_id)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        _, advertiser_id = self._hook_and_advertiser()
        c = self.conditions
        self.defer(
            trigger=TikTokAudienceTrigger(
                self.tiktok_conn_id,
                advertiser_id,
                self.audience_id,
                self.audience_name,
                c.require_valid,
                c.min_size,
                c.fail_if_missing,
                c.fail_if_expiring,
                self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        hook, advertiser_id = self._hook_and_advertiser()
        try:
            audience = asyncio.run(
                hook.afind_audience(advertiser_id, audience_id=self.audience_id, audience_name=self.audience_name)
            )
        except TikTokAPIError as err:
            if err.retryable:
                self.log.info("Audience %s not checked this time: %s", self.label, err)
                return False
            raise AirflowFailException(str(err)) from None
        except TikTokConfigurationError as err:
            raise AirflowFailException(str(err)) from None
        readiness = evaluate(audience, self.conditions, self.label)
        if readiness.failure:
            raise AirflowFailException(readiness.failure)
        if not readiness.met or audience is None:
            self.log.info("Waiting for %s", readiness.waiting_for)
            return False
        return PokeReturnValue(is_done=True, xcom_value=audience_summary(audience))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "success":
            raise AirflowException(f"TikTok audience {self.label}: {event.get('message')}")
        return event["audience"]
