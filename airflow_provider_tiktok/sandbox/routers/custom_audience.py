"""Custom audiences: ``dmp/custom_audience/`` list, get, delete, and the customer-file path
(``file/upload/``, ``create/``, ``update/``), with request shapes as in TikTok's official SDK.

File members and Segment API members live in the same membership store.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from airflow_provider_tiktok.sandbox.api import (
    Authorised,
    Context,
    Emulator,
    api_router,
    id_list_param,
    int_param,
    json_body,
    string_list,
)
from airflow_provider_tiktok.sandbox.files import check_signature, read_digests
from airflow_provider_tiktok.sandbox.payloads import ApiError
from airflow_provider_tiktok.sandbox.settings import AUDIENCE_SUB_TYPES, CALCULATE_TYPE_DIGEST_LENGTH
from airflow_provider_tiktok.sandbox.state import Audience, AudienceAttributes

router = api_router()

MAX_FILE_AUDIENCE_NAME_LENGTH = 128
FILE_ACTIONS = {"APPEND": "add", "REMOVE": "delete", "REPLACE": "replace"}


@router.get("/dmp/custom_audience/list/")
async def audience_list(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    query = request.query_params
    advertiser_id = emulator.require_advertiser(advertisers, query.get("advertiser_id"))
    page, page_size = int_param(query, "page", 1, 1, 10**6), int_param(query, "page_size", 10, 1, 100)
    audiences = emulator.state.visible_to(advertiser_id)
    if query.get("custom_audience_ids"):
        wanted = set(id_list_param(query, "custom_audience_ids"))
        audiences = [a for a in audiences if a.audience_id in wanted]
    window = audiences[(page - 1) * page_size : page * page_size]
    return {
        "list": [emulator.details(a, advertiser_id) for a in window],
        "page_info": {
            "page": page,
            "page_size": page_size,
            "total_number": len(audiences),
            "total_page": (len(audiences) + page_size - 1) // page_size,
        },
    }


@router.get("/dmp/custom_audience/get/")
async def audience_get(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    query = request.query_params
    advertiser_id = emulator.require_advertiser(advertisers, query.get("advertiser_id"))
    ids = id_list_param(query, "custom_audience_ids")
    return {
        "list": [
            {
                "audience_details": emulator.details(emulator.visible(advertiser_id, a), advertiser_id),
                "audience_history": [],
            }
            for a in ids
        ]
    }


@router.post("/dmp/custom_audience/file/upload/")
async def file_upload(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    """Multipart ``advertiser_id``, ``calculate_type``, ``file``, ``file_name``, ``file_signature``
    (MD5 of the file) -> ``{"file_path"}``."""
    form = await request.form()  # closed by ``received_request`` once the answer is recorded
    advertiser_id = emulator.require_advertiser(advertisers, form.get("advertiser_id"))
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(40002, "file: Missing data for required field.")
    content = await upload.read()
    calculate_type = str(form.get("calculate_type") or "")
    file_name = str(form.get("file_name") or upload.filename or "")
    check_signature(content, str(form.get("file_signature") or ""))
    settings = emulator.settings
    digests = read_digests(
        content, calculate_type, max_bytes=settings.max_file_bytes, accept_gzip=settings.accept_gzip_files
    )
    return {"file_path": emulator.state.store_file(advertiser_id, calculate_type, file_name, digests)}


@router.post("/dmp/custom_audience/create/")
async def create_from_files(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    name = audience_name(body.get("custom_audience_name"))
    calculate_type = str(body.get("calculate_type") or "")
    if calculate_type not in CALCULATE_TYPE_DIGEST_LENGTH:
        raise ApiError(40002, f"calculate_type: must be one of {', '.join(CALCULATE_TYPE_DIGEST_LENGTH)}.")
    file_paths = checked_files(emulator, advertiser_id, body, calculate_type)
    retention = body.get("retention_in_days")
    if retention is not None and (not isinstance(retention, int) or not 1 <= retention <= 365):
        raise ApiError(40002, "retention_in_days: must be an integer in [1, 365].")
    sub_type = body.get("audience_sub_type") or "NORMAL"
    if sub_type not in AUDIENCE_SUB_TYPES:
        raise ApiError(40002, f"audience_sub_type: must be one of {', '.join(AUDIENCE_SUB_TYPES)}.")
    attributes = AudienceAttributes(
        kind="file",
        calculate_type=calculate_type,
        audience_sub_type=sub_type,
        retention_in_days=retention,
        recalculated=time.time(),
    )
    audience = emulator.state.create_audience(advertiser_id, name, attributes)
    if audience is None:
        raise ApiError(40002, "The number of custom audiences of this advertiser has reached 400.")
    emulator.state.map_members("add", [audience.audience_id], emulator.state.file_members(file_paths))
    return {"custom_audience_id": audience.audience_id}


@router.post("/dmp/custom_audience/update/")
async def update_audience(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    """Rename (``custom_audience_name``) and/or change members (``file_paths`` + ``action``)."""
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    audience = emulator.owned(advertiser_id, body.get("custom_audience_id"))
    if body.get("custom_audience_name") is None and body.get("file_paths") is None:
        raise ApiError(40002, "Pass custom_audience_name or file_paths.")
    name = audience_name(body["custom_audience_name"]) if body.get("custom_audience_name") is not None else None
    if body.get("file_paths") is not None:
        change_members(emulator, audience, body)
    if name is not None:
        emulator.state.rename_audience(audience, name)
    return {}


def change_members(emulator: Emulator, audience: Audience, body: dict[str, Any]) -> None:
    action = body.get("action") or "REPLACE"
    if action not in FILE_ACTIONS:
        raise ApiError(40002, "action: must be one of APPEND, REMOVE, REPLACE.")
    if audience.attributes.kind == "lookalike":
        raise ApiError(40002, "A lookalike audience cannot be updated with files.")
    # A Segment API audience holds several id types; a file audience only its calculate_type.
    calculate_type = audience.attributes.calculate_type if audience.attributes.kind == "file" else None
    file_paths = checked_files(emulator, audience.advertiser_id, body, calculate_type)
    minimum = emulator.settings.min_audience_size
    size = emulator.state.map_members_if_size_stays(
        audience, FILE_ACTIONS[action], emulator.state.file_members(file_paths), minimum
    )
    if size < minimum:
        raise ApiError(40002, f"{action} would leave the audience with {size} members, below the minimum {minimum}.")
    audience.attributes.recalculated = time.time()
    emulator.state.save_attributes(audience)


@router.post("/dmp/custom_audience/delete/")
async def delete_audiences(request: Request, advertisers: Authorised, emulator: Context) -> dict:
    body = await json_body(request)
    advertiser_id = emulator.require_advertiser(advertisers, body.get("advertiser_id"))
    audiences = [emulator.owned(advertiser_id, a) for a in string_list(body, "custom_audience_ids")]
    for audience in audiences:
        emulator.state.delete_audience(audience.audience_id)
    return {}


def audience_name(value: Any) -> str:
    name = str(value or "").strip()
    if not name:
        raise ApiError(40002, "custom_audience_name: Missing data for required field.")
    if len(name) > MAX_FILE_AUDIENCE_NAME_LENGTH:
        raise ApiError(40002, f"custom_audience_name: at most {MAX_FILE_AUDIENCE_NAME_LENGTH} characters.")
    return name


def checked_files(emulator: Emulator, advertiser_id: str, body: dict, calculate_type: str | None) -> list[str]:
    """``file_paths`` uploaded by this advertiser, each of ``calculate_type`` (when given)."""
    file_paths = string_list(body, "file_paths", high=10_000)
    for file_path in file_paths:
        uploaded = emulator.state.customer_file(file_path)
        if uploaded is None or uploaded.advertiser_id != advertiser_id:
            raise ApiError(40002, f"file_path {file_path} does not exist for this advertiser.")
        if calculate_type is not None and uploaded.calculate_type != calculate_type:
            raise ApiError(
                40002,
                f"calculate_type {calculate_type} does not match file {file_path} ({uploaded.calculate_type}).",
            )
    return file_paths
