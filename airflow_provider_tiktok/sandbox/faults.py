"""Fault injection for the emulator: what can go wrong (``Faults``), and the answers that go wrong.

Every API route runs the same sequence: authorise, then ``FaultInjector.before`` (latency, transient
errors), then the handler applies the request, then ``FaultInjector.drop`` may replace the answer with a
cut connection. A dropped request has therefore been applied, as a real timeout after commit would be.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from airflow_provider_tiktok.sandbox.payloads import ApiError

DropMode = Literal["mid_body", "before_response", "mixed"]
DROP_MODES: tuple[str, ...] = get_args(DropMode)
SERVER_SEND = "sandbox.server_send"  # scope key: the server's own ``send``, kept by ``EmulatorApp``


@dataclass
class Faults:
    """What can go wrong, settable at start (CLI) and at run time (``POST /_sandbox/faults``)."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    transient_error_rate: float = 0.0  # half answered 50000 in the envelope, half HTTP 503
    drop_connection_rate: float = 0.0  # the request is applied, then the connection is cut (see drop_mode)
    drop_mode: DropMode = "mid_body"  # mid_body: status line and part of the body; before_response: no byte at all
    rate_limited_until: float = 0.0  # epoch seconds: every API call before it gets 40100
    valid_after_seconds: float = 3.0  # a new or recalculated audience reports is_valid=false this long

    def update(self, values: dict[str, Any]) -> None:
        """Apply a partial update; unknown names and bad values raise ValueError and change nothing."""
        values = dict(values)
        if "rate_limit_for_seconds" in values:
            values["rate_limited_until"] = time.time() + float(values.pop("rate_limit_for_seconds"))
        known = {f.name for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}")
            if name == "drop_mode":
                if value not in DROP_MODES:
                    raise ValueError(f"drop_mode must be one of {', '.join(DROP_MODES)}")
                checked[name] = value
            else:
                checked[name] = float(value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TransientHttpError(Exception):
    """Answer HTTP 503 with no envelope, as a load balancer in front of TikTok would."""


class FaultInjector:
    """Draws the injected faults from one seeded random stream, so a seeded run is repeatable."""

    def __init__(self, faults: Faults, seed: int | None) -> None:
        self.faults = faults
        self._chance = random.Random(seed)

    async def before(self) -> None:
        """Latency, then perhaps a transient error; runs after authorisation, before the handler."""
        faults = self.faults
        delay = faults.latency_ms + self._chance.random() * faults.latency_jitter_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if faults.transient_error_rate and self._chance.random() < faults.transient_error_rate:
            if self._chance.random() < 0.5:
                raise ApiError(50000, "Internal service error, please retry.")
            raise TransientHttpError

    def rate_limited(self) -> bool:
        return time.time() < self.faults.rate_limited_until

    def drop(self, answer: bytes) -> Response | None:
        """A response that cuts the connection instead of delivering ``answer``, or None to deliver it."""
        faults = self.faults
        if not faults.drop_connection_rate or self._chance.random() >= faults.drop_connection_rate:
            return None
        mode = faults.drop_mode
        if mode == "mixed":
            mode = "mid_body" if self._chance.random() < 0.5 else "before_response"
        return TruncatedResponse(answer) if mode == "mid_body" else ResetResponse()


class TruncatedResponse(Response):
    """Sends the status line, headers promising the whole answer, and half of it; then cuts the connection.

    Clients see ``requests.exceptions.ChunkedEncodingError`` / ``aiohttp.ClientPayloadError``.
    """

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.answer[: len(self.answer) // 2], "more_body": True})
        await cut_connection(scope)


class ResetResponse(Response):
    """Closes the connection before a single byte of the answer is written.

    Clients see a connection error (``requests.exceptions.ConnectionError``, ``aiohttp.ServerDisconnectedError``).
    """

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await cut_connection(scope)


async def cut_connection(scope: Scope) -> None:
    """Abort the request's connection. ASGI cannot express this, so it aborts the transport of the
    server's own ``send`` (uvicorn's request cycle), which ``EmulatorApp`` kept in the scope. The server
    then sees the connection lost, so it neither writes a 500 nor logs an unfinished response."""
    scope[SERVER_SEND].__self__.transport.abort()
    await asyncio.sleep(0)  # the server's connection_lost runs before the app returns
