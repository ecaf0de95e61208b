"""Provider metadata read by Airflow's ProvidersManager (kept import-light, as apache providers do)."""

from __future__ import annotations

from typing import Any

from airflow_provider_tiktok import __version__

PRODUCTION_BASE_URL = "https://business-api.tiktok.com/open_api/v1.3/"

#: The ``tiktok`` connection form, defined once: Airflow's UI reads it from here, the hook derives its
#: legacy form methods from it. Extras never leave as HTTP headers.
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "app_id": {
        "label": "App ID",
        "schema": {"type": ["string", "null"]},
        "description": "TikTok for Business app id (OAuth and advertiser listing)",
    },
    "secret": {
        "label": "App secret",
        "schema": {"type": ["string", "null"], "format": "password"},
        "description": "App secret; only ever sent to the OAuth endpoints",
    },
    "advertiser_id": {
        "label": "Default advertiser ID",
        "schema": {"type": ["string", "null"]},
        "description": "Ad account used when a task names none",
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "schema": {"type": ["string", "null"]},
        "description": "PEM file of extra certificate authorities (e.g. a corporate TLS proxy); verification stays on",
    },
}
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "API base URL", "password": "Access token"},
    "placeholders": {
        "host": PRODUCTION_BASE_URL,
        "password": "long-lived Marketing API access token",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-tiktok",
        "name": "TikTok",
        "description": "Sync warehouse-defined audiences into TikTok Custom Audiences.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "TikTok Marketing API",
                "external-doc-url": "https://business-api.tiktok.com/portal/docs",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "TikTok Marketing API",
                "python-modules": ["airflow_provider_tiktok.hooks.tiktok"],
            }
        ],
        "operators": [
            {
                "integration-name": "TikTok Marketing API",
                "python-modules": [
                    "airflow_provider_tiktok.operators.tiktok",
                    "airflow_provider_tiktok.operators.lifecycle",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "TikTok Marketing API",
                "python-modules": ["airflow_provider_tiktok.sensors.tiktok"],
            }
        ],
        "triggers": [
            {
                "integration-name": "TikTok Marketing API",
                "python-modules": ["airflow_provider_tiktok.triggers.tiktok"],
            }
        ],
        "extra-links": ["airflow_provider_tiktok.links.tiktok.TikTokAudienceLink"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_tiktok.hooks.tiktok.TikTokHook",
                "connection-type": "tiktok",
                "hook-name": "TikTok Marketing API",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONNECTION_FIELDS,
            }
        ],
    }
