"""FastAPI emulator of the TikTok Marketing API audience endpoints, with fault injection.

API routes live under ``/open_api/v1.3/`` and answer with TikTok's envelope and codes (HTTP 200 for
API errors, as TikTok does); they are grouped in ``routers/`` by API family and share ``api.py``'s
authorisation, fault injection and counting. Routes under ``/_sandbox/`` exist only in the emulator:
they inject faults, revoke tokens, issue OAuth codes and report state for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from airflow_provider_tiktok.limits import MAX_REQUESTS_PER_SECOND
from airflow_provider_tiktok.sandbox.api import API_PREFIX, Emulator
from airflow_provider_tiktok.sandbox.faults import SERVER_SEND, FaultInjector, Faults
from airflow_provider_tiktok.sandbox.routers import admin, custom_audience, lifecycle, oauth, segment
from airflow_provider_tiktok.sandbox.settings import EmulatorSettings
from airflow_provider_tiktok.sandbox.state import RequestCounters, SandboxState

__all__ = ["API_PREFIX", "EmulatorApp", "Faults", "create_app"]


class EmulatorApp(FastAPI):
    """Keeps the server's own ``send`` in each request's scope, so a fault can reset the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    state: SandboxState,
    faults: Faults | None = None,
    seed: int | None = None,
    *,
    settings: EmulatorSettings | None = None,
) -> FastAPI:
    """The emulator over ``state``; ``faults`` may change at run time, ``settings`` are fixed at start."""
    faults = faults or Faults()
    emulator = Emulator(
        state=state,
        faults=faults,
        injector=FaultInjector(faults, seed),
        counters=RequestCounters(MAX_REQUESTS_PER_SECOND),
        settings=settings or EmulatorSettings(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        emulator.mapping_worker.shutdown(wait=True)

    app = EmulatorApp(
        title="TikTok Marketing API emulator", docs_url="/_sandbox/docs", openapi_url=None, lifespan=lifespan
    )
    app.state.emulator = emulator
    for router in (oauth.public, oauth.authenticated, segment.router, custom_audience.router, lifecycle.router):
        app.include_router(router)
    app.include_router(admin.router)
    return app
