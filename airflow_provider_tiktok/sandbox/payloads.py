"""Request-body parsing for the emulator, and the ``segment/mapping/`` validator.

A 10,000-user mapping body is ~1 MB of JSON. Turning it into 50k Python objects costs ~45 ms on a
small machine, which would cap the emulator near 20 requests/s, below TikTok's 50. So well-formed
bodies take a fast path: one possessive (non-backtracking) regex checks the whole ``batch_data``
shape — alignment with ``id_schema``, hex ids of the right length — and ``findall`` extracts what
we store. Anything the fast path does not recognise goes to ``parse_mapping_exactly``, which is the
reference behaviour and decides every error code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import orjson

from airflow_provider_tiktok.limits import ID_SCHEMA_DIGEST_LENGTH as ID_LENGTHS
from airflow_provider_tiktok.limits import MAX_USERS_PER_MAPPING

_HEX = re.compile(r"[0-9a-f]*")


class ApiError(Exception):
    """An API failure answered with TikTok's envelope (HTTP 200, non-zero code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MappingRequest:
    advertiser_ids: list[str]
    action: str
    id_schema: list[str]
    member_keys: list[bytes]  # each user's first id (ASCII hex): what the emulator stores as a member
    audience_ids: set[str]


def json_object(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(40002, "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(40002, "Request body must be a JSON object.")
    return body


def parse_mapping(raw: bytes) -> MappingRequest:
    return _parse_mapping_fast(raw) or parse_mapping_exactly(json_object(raw))


def parse_mapping_exactly(body: dict) -> MappingRequest:
    """The reference validator: every rule, every error code."""
    advertiser_ids = body.get("advertiser_ids")
    if not isinstance(advertiser_ids, list) or not advertiser_ids:
        raise ApiError(40002, "advertiser_ids: Missing data for required field.")
    action = body.get("action")
    if action not in ("add", "delete"):
        raise ApiError(40002, "action: must be one of add, delete.")
    schema = body.get("id_schema")
    if not isinstance(schema, list) or not schema or any(s not in ID_LENGTHS for s in schema):
        raise ApiError(40002, f"id_schema: invalid value {schema!r}.")
    if len(set(schema)) != len(schema):
        raise ApiError(40002, "id_schema: duplicated values.")
    rows = body.get("batch_data")
    if not isinstance(rows, list) or not rows:
        raise ApiError(40002, "batch_data: Missing data for required field.")
    if len(rows) > MAX_USERS_PER_MAPPING:
        raise ApiError(40061, f"batch_data exceeds {MAX_USERS_PER_MAPPING} users.")
    member_keys, audience_ids = _read_rows(rows, schema)
    return MappingRequest([str(a) for a in advertiser_ids], action, schema, member_keys, audience_ids)


def _read_rows(rows: list, schema: list[str]) -> tuple[list[bytes], set[str]]:
    width = len(schema)
    columns: list[list[str]] = [[] for _ in schema]
    member_keys: list[bytes] = []
    audience_ids: set[str] = set()
    for position, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise ApiError(40002, f"batch_data[{position}] is not aligned with id_schema.")
        key = None
        for column, cell in zip(columns, row, strict=True):
            if not cell:
                continue
            digest = cell.get("id") if isinstance(cell, dict) else None
            targets = cell.get("audience_ids") if isinstance(cell, dict) else None
            if not isinstance(digest, str) or not isinstance(targets, list) or not targets:
                raise ApiError(40002, f"batch_data[{position}] has an entry without id or audience_ids.")
            column.append(digest)
            audience_ids.update(str(t) for t in targets)
            key = key or digest
        if key is None:
            raise ApiError(40002, f"batch_data[{position}] has no id.")
        member_keys.append(key.encode())
    for name, column in zip(schema, columns, strict=True):
        expected = ID_LENGTHS[name]
        joined = "".join(column)
        if len(joined) != expected * len(column) or {len(d) for d in column} - {expected} or not _HEX.fullmatch(joined):
            raise ApiError(40062, f"{name} ids must be lowercase hex digests of length {expected} (PII not hashed?).")
    return member_keys, audience_ids


# --- fast path -----------------------------------------------------------------------------------

_WS = rb"\s*+"
_SCHEMA_FIELD = re.compile(rb'"id_schema"\s*+:\s*+(\[[^\]]*+\])')
_BATCH_KEY = re.compile(rb'"batch_data"\s*+:\s*+')
_AUDIENCE_LISTS = re.compile(rb'"audience_ids"\s*+:\s*+\[([^\]]*+)\]')
_IDS = re.compile(rb'"id"\s*+:\s*+"([0-9a-f]++)"')
_FIRST_ID_OF_ROW = re.compile(rb'\[\s*+(?:\{\s*+\}\s*+,\s*+)*+\{\s*+"id"\s*+:\s*+"([0-9a-f]++)"')


@lru_cache(maxsize=64)
def _batch_pattern(schema: tuple[str, ...]) -> re.Pattern[bytes]:
    """``batch_data`` rows of exactly ``len(schema)`` cells, each ``{}`` or an id of the right length."""
    audience_list = rb"\[" + _WS + rb'"[0-9]++"(?:' + _WS + rb"," + _WS + rb'"[0-9]++")*+' + _WS + rb"\]"

    def cell(length: int) -> bytes:
        filled = (
            rb'"id"'
            + _WS
            + rb":"
            + _WS
            + rb'"[0-9a-f]{'
            + str(length).encode()
            + rb'}"'
            + _WS
            + rb","
            + _WS
            + rb'"audience_ids"'
            + _WS
            + rb":"
            + _WS
            + audience_list
            + _WS
        )
        return rb"\{" + _WS + rb"(?:" + filled + rb")?+\}"

    separator = _WS + rb"," + _WS
    row = rb"\[" + _WS + separator.join(cell(ID_LENGTHS[name]) for name in schema) + _WS + rb"\]"
    return re.compile(rb"\[" + _WS + row + rb"(?:" + separator + row + rb")*+" + _WS + rb"\]")


def _parse_mapping_fast(raw: bytes) -> MappingRequest | None:
    schema_field = _SCHEMA_FIELD.search(raw)
    batch_key = _BATCH_KEY.search(raw)
    if schema_field is None or batch_key is None:
        return None
    try:
        schema = orjson.loads(schema_field.group(1))
    except orjson.JSONDecodeError:
        return None
    if not schema or any(s not in ID_LENGTHS for s in schema) or len(set(schema)) != len(schema):
        return None
    batch = _batch_pattern(tuple(schema)).match(raw, batch_key.end())
    if batch is None:
        return None
    start, end = batch_key.end(), batch.end()
    try:
        head = orjson.loads(raw[:start] + b"null" + raw[end:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(head, dict) or head.get("id_schema") != schema or head.get("action") not in ("add", "delete"):
        return None
    advertiser_ids = head.get("advertiser_ids")
    if not isinstance(advertiser_ids, list) or not advertiser_ids:
        return None
    rows = raw.count(b"{", start, end) // len(schema)  # the pattern allows exactly len(schema) cells a row
    finder = _IDS if len(schema) == 1 else _FIRST_ID_OF_ROW
    member_keys = finder.findall(raw, start, end)
    if len(member_keys) != rows or rows > MAX_USERS_PER_MAPPING:
        return None  # a row with no id, or too many users: the exact path names the error
    audience_ids = _audience_ids(raw, start, end)
    return MappingRequest([str(a) for a in advertiser_ids], head["action"], schema, member_keys, audience_ids)


def _audience_ids(raw: bytes, start: int, end: int) -> set[str]:
    """Every audience id named; usually each cell repeats one list, which one ``count`` proves."""
    first = _AUDIENCE_LISTS.search(raw, start, end)
    if first is None:
        return set()
    if raw.count(first.group(0), start, end) == raw.count(b'"audience_ids"', start, end):
        distinct = {first.group(1)}
    else:
        distinct = set(_AUDIENCE_LISTS.findall(raw, start, end))
    return {str(a) for listed in distinct for a in orjson.loads(b"[" + listed + b"]")}
