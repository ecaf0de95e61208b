"""Extra link from a sync task to its audience in TikTok Ads Manager."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

AUDIENCE_XCOM_KEY = "tiktok_audience"
ADS_MANAGER_AUDIENCES = "https://ads.tiktok.com/i18n/audience?aadvid={advertiser_id}&keyword={audience_id}"


def audience_url(advertiser_id: str, audience_id: str) -> str:
    return ADS_MANAGER_AUDIENCES.format(advertiser_id=advertiser_id, audience_id=audience_id)


class TikTokAudienceLink(BaseOperatorLink):
    """Opens the audience the task synced (pushed to XCom under ``tiktok_audience``)."""

    name = "TikTok Ads Manager"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = XCom.get_value(ti_key=ti_key, key=AUDIENCE_XCOM_KEY)
        if not value or not value.get("audience_id"):
            return ""
        return audience_url(str(value["advertiser_id"]), str(value["audience_id"]))
