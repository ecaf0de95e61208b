"""OAuth and token routes: ``oauth2/access_token/``, ``oauth2/advertiser/get/``, ``user/info/``."""

from __future__ import annotations

from fastapi import Request

from airflow_provider_tiktok.sandbox.api import Authorised, Context, api_router, json_body
from airflow_provider_tiktok.sandbox.payloads import ApiError

public = api_router(authenticated=False)
authenticated = api_router()


@public.post("/oauth2/access_token/")
async def access_token(request: Request, emulator: Context) -> dict:
    body = await json_body(request)
    app_id, secret, code = str(body.get("app_id", "")), str(body.get("secret", "")), body.get("auth_code")
    if not emulator.state.app_secret_matches(app_id, secret):
        raise ApiError(40001, "app_id or secret is wrong.")
    granted = emulator.state.redeem_auth_code(app_id, str(code or ""))
    if granted is None:
        raise ApiError(40000, "auth_code is invalid, expired or already used.")
    token, advertisers = granted
    return {"access_token": token, "advertiser_ids": advertisers, "scope": [4, 5]}


@public.get("/oauth2/advertiser/get/")
async def advertiser_get(request: Request, emulator: Context) -> dict:
    query, state = request.query_params, emulator.state
    if not state.app_secret_matches(query.get("app_id", ""), query.get("secret", "")):
        raise ApiError(40001, "app_id or secret is wrong.")
    token = request.headers.get("Access-Token")
    status, advertisers = state.token_status(token)
    if status != "ok" or state.app_of_token(token or "") != query.get("app_id"):
        raise ApiError(40105, "Access token is incorrect or has been revoked.")
    return {"list": [{"advertiser_id": a, "advertiser_name": f"Sandbox advertiser {a}"} for a in advertisers]}


@authenticated.get("/user/info/")
async def user_info(advertisers: Authorised) -> dict:
    return {"display_name": "Sandbox user", "advertiser_count": len(advertisers)}
