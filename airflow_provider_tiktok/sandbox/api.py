"""What every TikTok API route of the emulator shares: TikTok's envelope, authorisation, faults, counting.

Routers built with ``api_router()`` answer HTTP 200 with ``{"code", "message", "request_id", "data"}``
as TikTok does: a handler returns its ``data`` dict or raises ``ApiError``. ``TikTokRoute`` wraps each
handler in the fixed sequence authorise (the ``Authorised`` dependency) -> injected latency and
transient errors -> handler -> perhaps a dropped connection, and counts the answer per endpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.responses import Response

from airflow_provider_tiktok.sandbox.faults import FaultInjector, Faults, TransientHttpError
from airflow_provider_tiktok.sandbox.payloads import ApiError, json_object
from airflow_provider_tiktok.sandbox.settings import EmulatorSettings
from airflow_provider_tiktok.sandbox.state import Audience, RequestCounters, SandboxState

API_PREFIX = "/open_api/v1.3/"
RECEIVED_KEPT = 500


@dataclass
class Emulator:
    """Everything a route needs, kept on ``app.state.emulator``."""

    state: SandboxState
    faults: Faults
    injector: FaultInjector
    counters: RequestCounters
    settings: EmulatorSettings
    # A 1 MB mapping body costs milliseconds of CPU. One worker thread parses and applies them, in
    # arrival order, so the event loop stays free to stamp each arrival as it comes: the rate limit
    # is judged on those stamps, and a busy loop would bunch them.
    mapping_worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-mapping")
    )
    mapped_users: dict[str, int] = field(default_factory=lambda: {"add": 0, "delete": 0})
    #: The last requests received, as ``received_request`` describes them (``GET /_sandbox/requests``).
    received: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECEIVED_KEPT))

    def require_advertiser(self, advertisers: list[str], advertiser_id: Any) -> str:
        """The advertiser id, if the token may act for it (40002 when missing, 40001 when not)."""
        advertiser_id = str(advertiser_id or "")
        if not advertiser_id:
            raise ApiError(40002, "advertiser_id: Missing data for required field.")
        if advertiser_id not in advertisers:
            raise ApiError(40001, f"No permission to operate advertiser {advertiser_id}.")
        return advertiser_id

    def owned(self, advertiser_id: str, audience_id: Any) -> Audience:
        """The advertiser's own audience (not one shared with it), or 40002."""
        audience = self.state.audiences.get(str(audience_id))
        if audience is None or audience.advertiser_id != advertiser_id:
            raise ApiError(40002, f"Audience {audience_id} does not exist or does not belong to the advertiser.")
        return audience

    def visible(self, advertiser_id: str, audience_id: Any) -> Audience:
        """The advertiser's own audience or one shared with it, or 40002."""
        audience = self.state.audiences.get(str(audience_id))
        if audience is None or (
            audience.advertiser_id != advertiser_id and advertiser_id not in audience.attributes.shared_with
        ):
            raise ApiError(40002, f"Audience {audience_id} does not exist or does not belong to the advertiser.")
        return audience

    def details(self, audience: Audience, viewer: str) -> dict:
        return audience.details(self.faults.valid_after_seconds, time.time(), viewer)


def emulator_of(request: Request) -> Emulator:
    return request.app.state.emulator


def authorised_advertisers(request: Request) -> list[str]:
    """The advertisers the request's token may act for; 40104/40105/40100 otherwise."""
    emulator = emulator_of(request)
    token = request.headers.get("Access-Token")
    status, advertisers = emulator.state.token_status(token)
    if status == "missing":
        raise ApiError(40104, "Access token is null.")
    if status != "ok":
        raise ApiError(40105, "Access token is incorrect or has been revoked.")
    if emulator.injector.rate_limited() or not emulator.counters.admit(token, time.monotonic()):
        raise ApiError(40100, "Too many requests. Please retry in some time.")
    return advertisers


Authorised = Annotated[list[str], Depends(authorised_advertisers)]
Context = Annotated[Emulator, Depends(emulator_of)]


def envelope(data: dict | None = None, code: int = 0, message: str = "OK") -> bytes:
    return orjson.dumps({"code": code, "message": message, "request_id": uuid.uuid4().hex, "data": data or {}})


def error_response(code: int, message: str) -> Response:
    """TikTok's error envelope: HTTP 200, a non-zero code."""
    return Response(envelope(code=code, message=message), media_type="application/json")


class EnvelopeResponse(Response):
    """A handler's ``data`` dict inside TikTok's success envelope."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return envelope(content)


class TikTokRoute(APIRoute):
    """Runs injected faults after the route's dependencies (authorisation) and before its body, turns
    ``ApiError`` into TikTok's error envelope, may drop the connection after the request was applied,
    and counts every answer by endpoint and code (-2 for a dropped connection, 503 for HTTP 503)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        endpoint = self.path.removeprefix(API_PREFIX)

        async def answer(request: Request) -> Response:
            emulator = emulator_of(request)
            code = 0
            try:
                response = await handle(request)
                dropped = emulator.injector.drop(response.body)
                if dropped is not None:
                    code, response = -2, dropped
            except ApiError as err:
                code, response = err.code, error_response(err.code, err.message)
            except RequestValidationError as err:
                code, response = 40002, error_response(40002, _first_error(err))
            except TransientHttpError:
                code, response = 503, Response("Service Unavailable", status_code=503)
            emulator.counters.record(endpoint, code)
            emulator.received.append({**await received_request(request, endpoint), "code": code})
            return response

        return answer


async def received_request(request: Request, endpoint: str) -> dict[str, Any]:
    """What a client sent, comparable across clients: query, JSON body or form fields (a file as its
    name, size and MD5). Mapping bodies are only measured: they are large and have their own checks."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    seen: dict[str, Any] = {
        "endpoint": endpoint,
        "method": request.method,
        "content_type": content_type,
        "query": dict(request.query_params),
    }
    if content_type == "multipart/form-data":
        form = await request.form()  # parsed once: the handler's parse is cached on the request
        seen["form"] = {name: await _form_value(value) for name, value in form.multi_items()}
        await form.close()
        return seen
    body = await request.body()
    if endpoint == "segment/mapping/" or not body:
        seen["body_bytes"] = len(body)
        return seen
    try:
        seen["json"] = orjson.loads(body)
    except orjson.JSONDecodeError:
        seen["body_bytes"] = len(body)
    return seen


async def _form_value(value: str | UploadFile) -> Any:
    if isinstance(value, str):
        return value
    await value.seek(0)
    content = await value.read()
    return {"filename": value.filename, "size": len(content), "md5": hashlib.md5(content).hexdigest()}


async def inject_faults(request: Request) -> None:
    await emulator_of(request).injector.before()


def api_router(*, authenticated: bool = True) -> APIRouter:
    """A router of TikTok API routes under ``/open_api/v1.3/``; authenticated ones need ``Access-Token``."""
    dependencies = [Depends(authorised_advertisers)] if authenticated else []
    return APIRouter(
        prefix=API_PREFIX.rstrip("/"),
        route_class=TikTokRoute,
        default_response_class=EnvelopeResponse,
        dependencies=[*dependencies, Depends(inject_faults)],
    )


def _first_error(err: RequestValidationError) -> str:
    problem = err.errors()[0] if err.errors() else {}
    where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request"
    return f"{where}: {problem.get('msg', 'invalid value')}."


async def json_body(request: Request) -> dict:
    return json_object(await request.body())


def string_list(body: dict, name: str, *, low: int = 1, high: int = 100) -> list[str]:
    """A JSON array of ``low``-``high`` ids, as strings; 40002 otherwise."""
    values = body.get(name)
    if not isinstance(values, list) or not low <= len(values) <= high or not all(values):
        raise ApiError(40002, f"{name}: must be a list of {low}-{high} values.")
    return [str(v) for v in values]


def id_list_param(query: Any, name: str) -> list[str]:
    """A query parameter holding a JSON array of 1-100 ids."""
    try:
        values = json.loads(query.get(name) or "")
    except ValueError:
        values = None
    if not isinstance(values, list) or not 1 <= len(values) <= 100:
        raise ApiError(40002, f"{name}: must be a JSON array of 1-100 ids.")
    return [str(v) for v in values]


def int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    try:
        value = int(raw) if raw is not None else default
    except (TypeError, ValueError):
        raise ApiError(40002, f"{name}: must be an integer.") from None
    if not low <= value <= high:
        raise ApiError(40002, f"{name}: must be between {low} and {high}.")
    return value
