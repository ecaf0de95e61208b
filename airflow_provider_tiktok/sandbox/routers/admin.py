"""Emulator-only routes under ``/_sandbox/`` (never on TikTok): faults, tokens, OAuth codes, statistics,
and read-outs of audiences, sharing and ad groups for tests."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from airflow_provider_tiktok.sandbox.api import Context

router = APIRouter(prefix="/_sandbox")


def json_response(value: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status_code, media_type="application/json")


@router.get("/stats")
async def stats(emulator: Context) -> Response:
    counters = emulator.counters
    return json_response(
        {
            "requests": {e: {str(c): n for c, n in codes.items()} for e, codes in counters.by_endpoint.items()},
            "peak_requests_per_second": counters.peak_arrivals_per_second,
            "peak_admitted_per_second": counters.peak_admitted_per_second,
            "mapping_mode": emulator.settings.mapping_mode,
            "mapped_users": dict(emulator.mapped_users),
            "audiences": {
                a.audience_id: {"name": a.name, "members": len(a.members), "received": a.received}
                for a in list(emulator.state.audiences.values())
            },
        }
    )


@router.post("/stats/reset")
async def reset_stats(emulator: Context) -> dict:
    emulator.counters.reset()
    emulator.mapped_users.update(add=0, delete=0)
    emulator.received.clear()
    return {"reset": True}


@router.get("/requests")
async def received(emulator: Context, endpoint: str | None = None) -> Response:
    """The last API requests received, oldest first, optionally of one endpoint (e.g. ``dmp/custom_audience/create/``):
    ``endpoint``, ``method``, ``content_type``, ``query``, then ``json`` (the parsed body), ``form`` (fields;
    a file as ``filename``, ``size``, ``md5``) or ``body_bytes``, and the answer's ``code``."""
    return json_response([r for r in list(emulator.received) if endpoint is None or r["endpoint"] == endpoint])


@router.get("/faults")
async def get_faults(emulator: Context) -> dict:
    return emulator.faults.as_dict()


@router.post("/faults")
async def set_faults(request: Request, emulator: Context) -> Response:
    try:
        emulator.faults.update(await request.json())
    except (ValueError, TypeError) as err:
        return json_response({"error": str(err)}, status_code=400)
    return json_response(emulator.faults.as_dict())


@router.get("/settings")
async def get_settings(emulator: Context) -> dict:
    settings = emulator.settings
    return {
        "mapping_mode": settings.mapping_mode,
        "min_audience_size": settings.min_audience_size,
        "min_lookalike_seed": settings.min_lookalike_seed,
        "max_file_bytes": settings.max_file_bytes,
        "accept_gzip_files": settings.accept_gzip_files,
        "business_centers": [sorted(center) for center in settings.business_centers],
    }


@router.post("/tokens/{token}/revoke")
async def revoke(token: str, emulator: Context) -> dict:
    return {"revoked": emulator.state.revoke(token)}


@router.post("/auth_codes")
async def issue_auth_code(request: Request, emulator: Context) -> dict:
    body = await request.json()
    code = emulator.state.issue_auth_code(str(body["app_id"]), [str(a) for a in body["advertiser_ids"]])
    return {"auth_code": code}


@router.get("/audiences/{audience_id}/members")
async def members(audience_id: str, emulator: Context) -> Response:
    audience = emulator.state.audiences.get(audience_id)
    if audience is None:
        return Response(status_code=404)
    return json_response(sorted(key.decode() for key in audience.members))


@router.get("/audiences/{audience_id}")
async def audience(audience_id: str, emulator: Context) -> Response:
    """Everything the emulator holds about one audience except its members."""
    found = emulator.state.audiences.get(audience_id)
    if found is None:
        return Response(status_code=404)
    attributes = found.attributes
    return json_response(
        {
            "audience_id": found.audience_id,
            "advertiser_id": found.advertiser_id,
            "name": found.name,
            "kind": attributes.kind,
            "calculate_type": attributes.calculate_type,
            "size": found.size,
            "members": len(found.members),
            "received": found.received,
            "shared_with": attributes.shared_with,
            "lookalike_spec": attributes.lookalike_spec,
            "adgroups": [
                {
                    "adgroup_id": adgroup_id,
                    "usage_mode": usage,
                    "status": (emulator.state.adgroup(adgroup_id) or ("", "DISABLE"))[1],
                }
                for adgroup_id, usage in attributes.applied_to.items()
            ],
        }
    )


@router.post("/adgroups/{adgroup_id}")
async def set_adgroup(adgroup_id: str, request: Request, emulator: Context) -> Response:
    """Create or change an ad group: ``{"advertiser_id": "...", "status": "ENABLE" | "DISABLE"}``."""
    body = await request.json()
    status = body.get("status", "ENABLE")
    if status not in ("ENABLE", "DISABLE") or not body.get("advertiser_id"):
        return json_response({"error": "advertiser_id and status ENABLE or DISABLE are required"}, status_code=400)
    emulator.state.set_adgroup(adgroup_id, str(body["advertiser_id"]), status)
    return json_response({"adgroup_id": adgroup_id, "advertiser_id": str(body["advertiser_id"]), "status": status})
