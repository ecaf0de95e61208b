"""TikTokAudienceTrigger: wait in the triggerer until an audience meets the sensor's conditions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tiktok.audience.readiness import AudienceConditions, Readiness, audience_label, evaluate
from airflow_provider_tiktok.exceptions import TikTokAPIError, TikTokConfigurationError

if TYPE_CHECKING:
    from airflow_provider_tiktok.hooks.tiktok import TikTokHook

CONDITION_NAMES = tuple(condition.name for condition in fields(AudienceConditions))


class TikTokAudienceTrigger(BaseTrigger):
    """
    Poll an audience with async HTTP until it is ready; yields exactly one event.

    The event is ``{"status": "success", "audience": {...}}`` or ``{"status": "error", "message": ...}``.
    See ``check_audience`` for what ends the wait.
    """

    def __init__(
        self,
        tiktok_conn_id: str,
        advertiser_id: str,
        audience_id: str | None = None,
        audience_name: str | None = None,
        conditions: dict[str, Any] | None = None,
        poke_interval: float = 60.0,
        **legacy: Any,
    ) -> None:
        """``legacy`` takes 0.1's keywords (the four conditions, ``poll_interval``), so a trigger deferred
        before an upgrade is still built from its stored kwargs."""
        super().__init__()
        if legacy:
            conditions = dict(conditions or {})
            conditions.update({name: legacy.pop(name) for name in CONDITION_NAMES if name in legacy})
            poke_interval = legacy.pop("poll_interval", poke_interval)
        if legacy:
            raise TypeError(f"TikTokAudienceTrigger got unexpected keyword argument(s) {sorted(legacy)}")
        self.tiktok_conn_id = tiktok_conn_id
        self.advertiser_id = advertiser_id
        self.audience_id = audience_id
        self.audience_name = audience_name
        self.conditions = AudienceConditions(**(conditions or {}))
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tiktok_conn_id": self.tiktok_conn_id,
                "advertiser_id": self.advertiser_id,
                "audience_id": self.audience_id,
                "audience_name": self.audience_name,
                "conditions": asdict(self.conditions),
                "poke_interval": self.poke_interval,
            },
        )

    @property
    def label(self) -> str:
        return audience_label(self.audience_id, self.audience_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_tiktok.hooks.tiktok import TikTokHook

        hook = TikTokHook(self.tiktok_conn_id)
        try:
            while True:
                readiness = await check_audience(
                    hook, self.advertiser_id, self.audience_id, self.audience_name, self.conditions
                )
                if readiness.failure:
                    yield TriggerEvent({"status": "error", "message": readiness.failure})
                    return
                if readiness.met:
                    yield TriggerEvent({"status": "success", "audience": readiness.summary})
                    return
                self.log.info("Waiting for %s; checking again in %ss", readiness.waiting_for, self.poke_interval)
                await asyncio.sleep(self.poke_interval)
        except Exception as err:  # one event on every path, as the triggerer expects
            yield TriggerEvent({"status": "error", "message": str(err)})


async def check_audience(
    hook: TikTokHook,
    advertiser_id: str,
    audience_id: str | None,
    audience_name: str | None,
    conditions: AudienceConditions,
) -> Readiness:
    """One look at the audience, shared by the sensor's pokes and the trigger: a rate-limited or transient
    answer means "not yet"; token, permission and configuration errors end the wait."""
    label = audience_label(audience_id, audience_name)
    try:
        audience = await hook.afind_audience(advertiser_id, audience_id=audience_id, audience_name=audience_name)
    except TikTokAPIError as err:
        if err.retryable:
            return Readiness(False, waiting_for=f"TikTok to answer about audience {label} ({err})")
        return Readiness(False, failure=str(err))
    except TikTokConfigurationError as err:
        return Readiness(False, failure=str(err))
    return evaluate(audience, conditions, label)
