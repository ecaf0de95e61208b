"""The Segment API: ``segment/audience/`` (create, delete) and ``segment/mapping/`` (add, delete members).

``segment/mapping/`` bodies are parsed on the one mapping worker thread (see ``Emulator``). In sink mode
they are checked as strictly but only counted: no member is stored.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from airflow_provider_tiktok.sandbox.api import Authorised, Context, Emulator, api_router, json_body
from airflow_provider_tiktok.sandbox.payloads import ApiError, parse_mapping, summarise_mapping

router = api_router()


@router.post("/segment/audience/")
async def segment_audience(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    action = body.get("action")
    if action == "create":
        name = str(body.get("custom_audience_name") or "").strip()
        if not name:
            raise ApiError(40002, "custom_audience_name: Missing data for required field.")
        audience = emulator.state.create_audience(advertiser_id, name)
        if audience is None:
            raise ApiError(40002, "The number of custom audiences of this advertiser has reached 400.")
        return {"audience_id": audience.audience_id}
    if action == "delete":
        targets = body.get("delete_audience_id")
        targets = [str(t) for t in (targets if isinstance(targets, list) else [targets]) if t]
        if not targets:
            raise ApiError(40002, "delete_audience_id: Missing data for required field.")
        for audience_id in targets:
            emulator.owned(advertiser_id, audience_id)
            emulator.state.delete_audience(audience_id)
        return {"audience_id": targets[0]}
    raise ApiError(40002, "action: must be one of create, delete.")


@router.post("/segment/mapping/")
async def segment_mapping(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    raw = await request.body()
    await asyncio.get_running_loop().run_in_executor(emulator.mapping_worker, apply_mapping, emulator, raw, advertisers)
    return {}


def apply_mapping(emulator: Emulator, raw: bytes, advertisers: list[str]) -> None:
    sink = emulator.settings.mapping_mode == "sink"
    mapping = summarise_mapping(raw) if sink else parse_mapping(raw)
    listed = [emulator.require_advertiser(advertisers, a) for a in mapping.advertiser_ids]
    for audience_id in mapping.audience_ids:
        audience = emulator.state.audiences.get(audience_id)
        if audience is None or audience.advertiser_id not in listed:
            raise ApiError(40002, f"Audience {audience_id} does not belong to advertisers {listed}.")
    audience_ids = sorted(mapping.audience_ids)
    if sink:
        users = mapping.users
        if mapping.action == "add":
            for audience_id in audience_ids:
                emulator.state.audiences[audience_id].received += users
    else:
        users = len(mapping.member_keys)
        emulator.state.map_members(mapping.action, audience_ids, mapping.member_keys)
    emulator.mapped_users[mapping.action] += users
