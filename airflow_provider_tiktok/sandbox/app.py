"""FastAPI emulator of the TikTok Marketing API audience endpoints, with fault injection.

API routes live under ``/open_api/v1.3/`` and answer with TikTok's envelope and codes (HTTP 200 for
API errors, as TikTok does). Routes under ``/_sandbox/`` exist only in the emulator: they inject faults,
revoke tokens, issue OAuth codes and report statistics for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from airflow_provider_tiktok.limits import MAX_REQUESTS_PER_SECOND
from airflow_provider_tiktok.sandbox.payloads import ApiError, json_object, parse_mapping
from airflow_provider_tiktok.sandbox.state import RequestCounters, SandboxState

API_PREFIX = "/open_api/v1.3/"


@dataclass
class Faults:
    """What can go wrong, settable at start (CLI) and at run time (``POST /_sandbox/faults``)."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    transient_error_rate: float = 0.0  # half answered 50000 in the envelope, half HTTP 503
    drop_connection_rate: float = 0.0  # the request is applied, then the connection is cut
    rate_limited_until: float = 0.0  # epoch seconds: every API call before it gets 40100
    valid_after_seconds: float = 3.0  # a new audience reports is_valid=false this long

    def update(self, values: dict[str, Any]) -> None:
        if "rate_limit_for_seconds" in values:
            self.rate_limited_until = time.time() + float(values.pop("rate_limit_for_seconds"))
        for name, value in values.items():
            if name not in self.__dataclass_fields__:
                raise ValueError(f"unknown fault {name!r}")
            setattr(self, name, float(value))


def envelope(data: dict | None = None, code: int = 0, message: str = "OK") -> Response:
    body = {"code": code, "message": message, "request_id": uuid.uuid4().hex, "data": data or {}}
    return Response(orjson.dumps(body), media_type="application/json")


class TransientHttpError(Exception):
    """Answer HTTP 503 with no envelope, as a load balancer in front of TikTok would."""


class DropConnection(Exception):
    """Raised after a request was applied, to cut the connection instead of answering."""


def create_app(state: SandboxState, faults: Faults | None = None, seed: int | None = None) -> FastAPI:
    # A 1 MB mapping body costs milliseconds of CPU. One worker thread parses and applies them, in
    # arrival order, so the event loop stays free to stamp each arrival as it comes: the rate limit
    # is judged on those stamps, and a busy loop would bunch them.
    mapping_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-mapping")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        mapping_worker.shutdown(wait=True)

    app = FastAPI(title="TikTok Marketing API emulator", docs_url="/_sandbox/docs", openapi_url=None, lifespan=lifespan)
    app.state.sandbox = state
    app.state.faults = faults = faults or Faults()
    app.state.counters = counters = RequestCounters(MAX_REQUESTS_PER_SECOND)
    chance = random.Random(seed)

    Handler = Callable[[Request, list[str]], Awaitable[dict]]

    def api_route(path: str, method: str, *, authenticated: bool = True):
        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                code, response = 0, None
                try:
                    advertisers: list[str] = []
                    if authenticated:
                        advertisers = authorise(request)
                    await inject_faults()
                    data = await handler(request, advertisers)
                    if faults.drop_connection_rate and chance.random() < faults.drop_connection_rate:
                        raise DropConnection
                    response = envelope(data)
                except ApiError as err:
                    code, response = err.code, envelope(code=err.code, message=err.message)
                except TransientHttpError:
                    code, response = 503, Response("Service Unavailable", status_code=503)
                except DropConnection:
                    code, response = -2, TruncatedResponse()
                counters.record(path, code)
                return response

            getattr(app, method)(API_PREFIX + path)(endpoint)
            return handler

        return register

    def authorise(request: Request) -> list[str]:
        token = request.headers.get("Access-Token")
        status, advertisers = state.token_status(token)
        if status == "missing":
            raise ApiError(40104, "Access token is null.")
        if status != "ok":
            raise ApiError(40105, "Access token is incorrect or has been revoked.")
        if time.time() < faults.rate_limited_until or not counters.admit(token, time.monotonic()):
            raise ApiError(40100, "Too many requests. Please retry in some time.")
        return advertisers

    async def inject_faults() -> None:
        delay = faults.latency_ms + chance.random() * faults.latency_jitter_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if faults.transient_error_rate and chance.random() < faults.transient_error_rate:
            if chance.random() < 0.5:
                raise ApiError(50000, "Internal service error, please retry.")
            raise TransientHttpError

    def require_advertiser(advertisers: list[str], advertiser_id: Any) -> str:
        advertiser_id = str(advertiser_id or "")
        if not advertiser_id:
            raise ApiError(40002, "advertiser_id: Missing data for required field.")
        if advertiser_id not in advertisers:
            raise ApiError(40001, f"No permission to operate advertiser {advertiser_id}.")
        return advertiser_id

    # --- OAuth -------------------------------------------------------------------------------

    @api_route("oauth2/access_token/", "post", authenticated=False)
    async def access_token(request: Request, _: list[str]) -> dict:
        body = await json_body(request)
        app_id, secret, code = str(body.get("app_id", "")), str(body.get("secret", "")), body.get("auth_code")
        if not state.app_secret_matches(app_id, secret):
            raise ApiError(40001, "app_id or secret is wrong.")
        granted = state.redeem_auth_code(app_id, str(code or ""))
        if granted is None:
            raise ApiError(40000, "auth_code is invalid, expired or already used.")
        token, advertisers = granted
        return {"access_token": token, "advertiser_ids": advertisers, "scope": [4, 5]}

    @api_route("oauth2/advertiser/get/", "get", authenticated=False)
    async def advertiser_get(request: Request, _: list[str]) -> dict:
        query = request.query_params
        if not state.app_secret_matches(query.get("app_id", ""), query.get("secret", "")):
            raise ApiError(40001, "app_id or secret is wrong.")
        token = request.headers.get("Access-Token")
        status, advertisers = state.token_status(token)
        if status != "ok" or state.app_of_token(token or "") != query.get("app_id"):
            raise ApiError(40105, "Access token is incorrect or has been revoked.")
        return {"list": [{"advertiser_id": a, "advertiser_name": f"Sandbox advertiser {a}"} for a in advertisers]}

    @api_route("user/info/", "get")
    async def user_info(request: Request, advertisers: list[str]) -> dict:
        return {"display_name": "Sandbox user", "advertiser_count": len(advertisers)}

    # --- audiences ---------------------------------------------------------------------------

    @api_route("segment/audience/", "post")
    async def segment_audience(request: Request, advertisers: list[str]) -> dict:
        body = await json_body(request)
        advertiser_id = require_advertiser(advertisers, body.get("advertiser_id"))
        action = body.get("action")
        if action == "create":
            name = str(body.get("custom_audience_name") or "").strip()
            if not name:
                raise ApiError(40002, "custom_audience_name: Missing data for required field.")
            audience = state.create_audience(advertiser_id, name)
            if audience is None:
                raise ApiError(40002, "The number of custom audiences of this advertiser has reached 400.")
            return {"audience_id": audience.audience_id}
        if action == "delete":
            targets = body.get("delete_audience_id")
            targets = [str(t) for t in (targets if isinstance(targets, list) else [targets]) if t]
            if not targets:
                raise ApiError(40002, "delete_audience_id: Missing data for required field.")
            for audience_id in targets:
                owned(advertiser_id, audience_id)
                state.delete_audience(audience_id)
            return {"audience_id": targets[0]}
        raise ApiError(40002, "action: must be one of create, delete.")

    def owned(advertiser_id: str, audience_id: str):
        if not _owns(advertiser_id, str(audience_id)):
            raise ApiError(40002, f"Audience {audience_id} does not exist or does not belong to the advertiser.")
        return state.audiences[str(audience_id)]

    @api_route("segment/mapping/", "post")
    async def segment_mapping(request: Request, advertisers: list[str]) -> dict:
        raw = await request.body()
        await asyncio.get_running_loop().run_in_executor(mapping_worker, apply_mapping, raw, advertisers)
        return {}

    def apply_mapping(raw: bytes, advertisers: list[str]) -> None:
        mapping = parse_mapping(raw)
        listed = [require_advertiser(advertisers, a) for a in mapping.advertiser_ids]
        for audience_id in mapping.audience_ids:
            if not any(_owns(a, audience_id) for a in listed):
                raise ApiError(40002, f"Audience {audience_id} does not belong to advertisers {listed}.")
        state.map_members(mapping.action, sorted(mapping.audience_ids), mapping.member_keys)

    def _owns(advertiser_id: str, audience_id: str) -> bool:
        audience = state.audiences.get(audience_id)
        return audience is not None and audience.advertiser_id == advertiser_id

    @api_route("dmp/custom_audience/list/", "get")
    async def audience_list(request: Request, advertisers: list[str]) -> dict:
        query = request.query_params
        advertiser_id = require_advertiser(advertisers, query.get("advertiser_id"))
        page, page_size = int_param(query, "page", 1, 1, 10**6), int_param(query, "page_size", 10, 1, 100)
        audiences = state.audiences_of(advertiser_id)
        now = time.time()
        window = audiences[(page - 1) * page_size : page * page_size]
        return {
            "list": [a.details(faults.valid_after_seconds, now) for a in window],
            "page_info": {
                "page": page,
                "page_size": page_size,
                "total_number": len(audiences),
                "total_page": (len(audiences) + page_size - 1) // page_size,
            },
        }

    @api_route("dmp/custom_audience/get/", "get")
    async def audience_get(request: Request, advertisers: list[str]) -> dict:
        query = request.query_params
        advertiser_id = require_advertiser(advertisers, query.get("advertiser_id"))
        try:
            ids = json.loads(query.get("custom_audience_ids") or "")
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise ApiError(40002, "custom_audience_ids: must be a JSON array of 1-100 ids.")
        now = time.time()
        return {
            "list": [
                {
                    "audience_details": owned(advertiser_id, str(a)).details(faults.valid_after_seconds, now),
                    "audience_history": [],
                }
                for a in ids
            ]
        }

    # --- emulator-only admin routes ----------------------------------------------------------

    @app.get("/_sandbox/stats")
    async def stats() -> Response:
        return Response(
            orjson.dumps(
                {
                    "requests": {e: {str(c): n for c, n in codes.items()} for e, codes in counters.by_endpoint.items()},
                    "peak_requests_per_second": counters.peak_arrivals_per_second,
                    "peak_admitted_per_second": counters.peak_admitted_per_second,
                    "audiences": {
                        a.audience_id: {"name": a.name, "members": len(a.members), "received": a.received}
                        for a in list(state.audiences.values())
                    },
                }
            ),
            media_type="application/json",
        )

    @app.post("/_sandbox/stats/reset")
    async def reset_stats() -> dict:
        counters.reset()
        return {"reset": True}

    @app.get("/_sandbox/faults")
    async def get_faults() -> dict:
        return asdict(faults)

    @app.post("/_sandbox/faults")
    async def set_faults(request: Request) -> Response:
        try:
            faults.update(await request.json())
        except (ValueError, TypeError) as err:
            return Response(orjson.dumps({"error": str(err)}), status_code=400, media_type="application/json")
        return Response(orjson.dumps(asdict(faults)), media_type="application/json")

    @app.post("/_sandbox/tokens/{token}/revoke")
    async def revoke(token: str) -> dict:
        return {"revoked": state.revoke(token)}

    @app.post("/_sandbox/auth_codes")
    async def issue_auth_code(request: Request) -> dict:
        body = await request.json()
        return {"auth_code": state.issue_auth_code(str(body["app_id"]), [str(a) for a in body["advertiser_ids"]])}

    @app.get("/_sandbox/audiences/{audience_id}/members")
    async def members(audience_id: str) -> Response:
        audience = state.audiences.get(audience_id)
        if audience is None:
            return Response(status_code=404)
        keys = sorted(key.decode() for key in audience.members)
        return Response(orjson.dumps(keys), media_type="application/json")

    return app


async def json_body(request: Request) -> dict:
    return json_object(await request.body())


def int_param(query, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        raise ApiError(40002, f"{name}: must be an integer.") from None
    if not low <= value <= high:
        raise ApiError(40002, f"{name}: must be between {low} and {high}.")
    return value


class TruncatedResponse(Response):
    """Promises more body than it sends, so the server closes the connection mid-reply."""

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b'{"code": 0', "more_body": False})
