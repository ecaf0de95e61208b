"""TikTokAudienceTrigger: wait in the triggerer until an audience meets the sensor's conditions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tiktok.audience.readiness import AudienceConditions, audience_summary, evaluate
from airflow_provider_tiktok.exceptions import TikTokAPIError


class TikTokAudienceTrigger(BaseTrigger):
    """
    Poll an audience with async HTTP until it is ready; yields exactly one event.

    The event is ``{"status": "success", "audience": {...}}`` or ``{"status": "error", "message": ...}``.
    Rate-limited and transient answers count as "not yet"; token, permission and unknown-audience
    errors end the wait at once.
    """

    def __init__(
        self,
        tiktok_conn_id: str,
        advertiser_id: str,
        audience_id: str | None = None,
        audience_name: str | None = None,
        require_valid: bool = True,
        min_size: int | None = None,
        fail_if_missing: bool = False,
        fail_if_expiring: bool = False,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.tiktok_conn_id = tiktok_conn_id
        self.advertiser_id = advertiser_id
        self.audience_id = audience_id
        self.audience_name = audience_name
        self.require_valid = require_valid
        self.min_size = min_size
        self.fail_if_missing = fail_if_missing
        self.fail_if_expiring = fail_if_expiring
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tiktok_conn_id": self.tiktok_conn_id,
                "advertiser_id": self.advertiser_id,
                "audience_id": self.audience_id,
                "audience_name": self.audience_name,
                "require_valid": self.require_valid,
                "min_size": self.min_size,
                "fail_if_missing": self.fail_if_missing,
                "fail_if_expiring": self.fail_if_expiring,
                "poll_interval": self.poll_interval,
            },
        )

    @property
    def conditions(self) -> AudienceConditions:
        return AudienceConditions(self.require_valid, self.min_size, self.fail_if_missing, self.fail_if_expiring)

    @property
    def label(self) -> str:
        return str(self.audience_id) if self.audience_id else repr(self.audience_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_tiktok.hooks.tiktok import TikTokHook

        hook = TikTokHook(self.tiktok_conn_id)
        try:
            while True:
                try:
                    audience = await hook.afind_audience(
                        self.advertiser_id, audience_id=self.audience_id, audience_name=self.audience_name
                    )
                except TikTokAPIError as err:
                    if not err.retryable:
                        raise
                    self.log.info("Audience %s: %s; polling again in %ss", self.label, err, self.poll_interval)
                else:
                    readiness = evaluate(audience, self.conditions, self.label)
                    if readiness.failure:
                        yield TriggerEvent({"status": "error", "message": readiness.failure})
                        return
                    if readiness.met and audience is not None:
                        yield TriggerEvent({"status": "success", "audience": audience_summary(audience)})
                        return
                    self.log.info("Waiting for %s", readiness.waiting_for)
                await asyncio.sleep(self.poll_interval)
        except Exception as err:  # one event on every path, as the triggerer expects
            yield TriggerEvent({"status": "error", "message": str(err)})
