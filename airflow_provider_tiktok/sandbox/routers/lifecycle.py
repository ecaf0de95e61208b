"""Audience lifecycle beyond members: lookalikes, sharing within a Business Center, applying to ad groups.

Request shapes follow TikTok's official SDK. A lookalike's size is the emulator's own model (its seed's
members times a factor per ``audience_size``); ad groups exist only as far as applying audiences needs.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request

from airflow_provider_tiktok.sandbox.api import (
    Authorised,
    Context,
    Emulator,
    api_router,
    id_list_param,
    json_body,
    string_list,
)
from airflow_provider_tiktok.sandbox.payloads import ApiError
from airflow_provider_tiktok.sandbox.routers.custom_audience import audience_name
from airflow_provider_tiktok.sandbox.settings import LOOKALIKE_MOBILE_OS, LOOKALIKE_PLACEMENTS, LOOKALIKE_SIZES
from airflow_provider_tiktok.sandbox.state import Audience, AudienceAttributes

router = api_router()

#: Lookalike members per seed member, by ``audience_size`` (the emulator's model, not TikTok's).
LOOKALIKE_FACTOR = {"NARROW": 2, "BALANCED": 5, "BROAD": 10}
MAX_SHARED_ADVERTISERS = 10


@router.post("/dmp/custom_audience/lookalike/create/")
async def lookalike_create(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    name = audience_name(body.get("custom_audience_name"))
    spec = lookalike_spec(body.get("lookalike_spec"))
    seed = checked_seed(emulator, advertiser_id, spec["source_audience_id"])
    attributes = AudienceAttributes(
        kind="lookalike",
        calculate_type=seed.attributes.calculate_type,
        recalculated=time.time(),
        lookalike_spec=spec,
        lookalike_size=lookalike_size(seed, spec),
    )
    audience = emulator.state.create_audience(advertiser_id, name, attributes)
    if audience is None:
        raise ApiError(40002, "The number of custom audiences of this advertiser has reached 400.")
    return {"custom_audience_id": audience.audience_id}


@router.post("/dmp/custom_audience/lookalike/update/")
async def lookalike_refresh(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    """Recomputes each lookalike from its seed's current members."""
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    lookalikes = [emulator.owned(advertiser_id, a) for a in string_list(body, "custom_audience_ids")]
    for lookalike in lookalikes:
        if lookalike.attributes.kind != "lookalike":
            raise ApiError(40002, f"Audience {lookalike.audience_id} is not a lookalike audience.")
    for lookalike in lookalikes:
        spec = lookalike.attributes.lookalike_spec or {}
        seed = checked_seed(emulator, advertiser_id, spec.get("source_audience_id"))
        lookalike.attributes.lookalike_size = lookalike_size(seed, spec)
        lookalike.attributes.recalculated = time.time()
        emulator.state.save_attributes(lookalike)
    return {}


def lookalike_spec(spec: Any) -> dict[str, Any]:
    """The spec with TikTok's defaults filled in, or 40002 naming the first bad field."""
    if not isinstance(spec, dict) or not spec.get("source_audience_id"):
        raise ApiError(40002, "lookalike_spec.source_audience_id: Missing data for required field.")
    size = spec.get("audience_size") or "BALANCED"
    if size not in LOOKALIKE_SIZES:
        raise ApiError(40002, f"lookalike_spec.audience_size: must be one of {', '.join(LOOKALIKE_SIZES)}.")
    locations = spec.get("location_ids")
    if not isinstance(locations, list) or not locations:
        raise ApiError(40002, "lookalike_spec.location_ids: Missing data for required field.")
    mobile_os = spec.get("mobile_os") or "ALL"
    if mobile_os not in LOOKALIKE_MOBILE_OS:
        raise ApiError(40002, f"lookalike_spec.mobile_os: must be one of {', '.join(LOOKALIKE_MOBILE_OS)}.")
    placements = spec.get("placements") or ["TIKTOK"]
    if not isinstance(placements, list) or set(placements) - set(LOOKALIKE_PLACEMENTS):
        raise ApiError(40002, f"lookalike_spec.placements: values must be among {', '.join(LOOKALIKE_PLACEMENTS)}.")
    include_source = spec.get("include_source", False)
    if not isinstance(include_source, bool):
        raise ApiError(40002, "lookalike_spec.include_source: must be a boolean.")
    return {
        "source_audience_id": str(spec["source_audience_id"]),
        "audience_size": size,
        "location_ids": [str(location) for location in locations],
        "include_source": include_source,
        "mobile_os": mobile_os,
        "placements": placements,
    }


def checked_seed(emulator: Emulator, advertiser_id: str, seed_id: Any) -> Audience:
    """A seed the advertiser can see, not itself a lookalike, valid and large enough."""
    seed = emulator.visible(advertiser_id, seed_id)
    if seed.attributes.kind == "lookalike":
        raise ApiError(40002, "The source audience cannot be a lookalike audience.")
    if not seed.is_valid(emulator.faults.valid_after_seconds, time.time()):
        raise ApiError(40002, f"The source audience {seed.audience_id} is not ready yet (is_valid is false).")
    minimum = emulator.settings.min_lookalike_seed
    if len(seed.members) < minimum:
        raise ApiError(40002, f"The source audience has {len(seed.members)} members; at least {minimum} are needed.")
    return seed


def lookalike_size(seed: Audience, spec: dict[str, Any]) -> int:
    size = len(seed.members) * LOOKALIKE_FACTOR[spec["audience_size"]]
    return size + (len(seed.members) if spec["include_source"] else 0)


# --- sharing ---------------------------------------------------------------------------------


@router.post("/dmp/custom_audience/share/")
async def share(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    audiences = [emulator.owned(advertiser_id, a) for a in string_list(body, "custom_audience_ids")]
    targets = string_list(body, "shared_advertiser_ids", high=MAX_SHARED_ADVERTISERS)
    center = emulator.settings.business_center_of(advertiser_id, advertisers)
    for target in targets:
        if target == advertiser_id or target not in center:
            raise ApiError(40002, f"Advertiser {target} is not another advertiser of the same Business Center.")
    for audience in audiences:
        shared = audience.attributes.shared_with
        shared.extend(t for t in targets if t not in shared)
        emulator.state.save_attributes(audience)
    return {}


@router.post("/dmp/custom_audience/share/cancel/")
async def share_cancel(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    audience = emulator.owned(advertiser_id, body.get("custom_audience_id"))
    target = str(body.get("shared_advertiser_id") or "")
    if target not in audience.attributes.shared_with:
        raise ApiError(40002, f"Audience {audience.audience_id} is not shared with advertiser {target or '?'}.")
    audience.attributes.shared_with.remove(target)
    emulator.state.save_attributes(audience)
    return {}


@router.get("/dmp/custom_audience/share/log/")
async def share_log(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    query = request.query_params
    advertiser_id = emulator.require_advertiser(advertisers, query.get("advertiser_id"))
    audience = emulator.owned(advertiser_id, query.get("custom_audience_id"))
    return {
        "list": [
            {"shared_advertiser_id": a, "shared_advertiser_name": f"Sandbox advertiser {a}"}
            for a in audience.attributes.shared_with
        ]
    }


# --- applying to ad groups ---------------------------------------------------------------------


@router.post("/dmp/custom_audience/apply/")
async def apply(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    """``action_mode`` Apply (with ``usage_mode`` Include/Exclude) or Disconnect, for ``adgroup_ids``.
    Ad groups the emulator has not seen are created active (``ENABLE``)."""
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    audience = emulator.visible(advertiser_id, body.get("custom_audience_id"))
    adgroup_ids = string_list(body, "adgroup_ids")
    mode, usage = body.get("action_mode"), body.get("usage_mode")
    if mode not in ("Apply", "Disconnect"):
        raise ApiError(40002, "action_mode: must be one of Apply, Disconnect.")
    if mode == "Apply" and usage not in ("Include", "Exclude"):
        raise ApiError(40002, "usage_mode: must be one of Include, Exclude when action_mode is Apply.")
    for adgroup_id in adgroup_ids:
        known = emulator.state.adgroup(adgroup_id)
        if known is not None and known[0] != advertiser_id:
            raise ApiError(40002, f"Ad group {adgroup_id} does not belong to the advertiser.")
    applied = audience.attributes.applied_to
    for adgroup_id in adgroup_ids:
        if mode == "Apply":
            if emulator.state.adgroup(adgroup_id) is None:
                emulator.state.set_adgroup(adgroup_id, advertiser_id, "ENABLE")
            applied[adgroup_id] = usage
        else:
            applied.pop(adgroup_id, None)
    emulator.state.save_attributes(audience)
    return {}


@router.get("/dmp/custom_audience/apply/log/")
async def apply_log(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    """The ad groups each audience is applied to now (the emulator keeps no history)."""
    query = request.query_params
    advertiser_id = emulator.require_advertiser(advertisers, query.get("advertiser_id"))
    rows = []
    for audience_id in id_list_param(query, "custom_audience_ids"):
        audience = emulator.visible(advertiser_id, audience_id)
        for adgroup_id, usage in audience.attributes.applied_to.items():
            status = (emulator.state.adgroup(adgroup_id) or ("", "DISABLE"))[1]
            rows.append(
                {
                    "custom_audience_id": audience.audience_id,
                    "adgroup_id": adgroup_id,
                    "action": "APPLY",
                    "usage_mode": usage,
                    "operation_status": status,
                }
            )
    return {"list": rows, "page_info": {"page": 1, "page_size": len(rows), "total_number": len(rows), "total_page": 1}}
