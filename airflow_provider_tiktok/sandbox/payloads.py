"""Request-body parsing for the emulator, and the ``segment/mapping/`` validator.

A 10,000-user mapping body is ~1 MB of JSON. Turning it into 50k Python objects costs ~45 ms on a
small machine, which would cap the emulator near 20 requests/s, below TikTok's 50. So well-formed
bodies take one of two fast paths, tried in order:

* compact JSON (as orjson and ``JSON.stringify`` write it) with one audience list: byte replaces
  turn each cell into a marker, numpy checks ids and cell counts, and a regex checks the few
  bytes of structure left (~3 ms);
* any other whitespace or audience lists: one possessive (non-backtracking) regex checks the whole
  ``batch_data`` shape and ``findall`` extracts what we store (~12 ms).

Anything neither recognises goes to ``parse_mapping_exactly``, which is the reference behaviour and
decides every error code. ``summarise_mapping`` (sink mode) runs the same checks but, on the compact
path, only counts the users instead of slicing out their ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import orjson

from airflow_provider_tiktok.limits import ID_SCHEMA_DIGEST_LENGTH as ID_LENGTHS
from airflow_provider_tiktok.limits import MAX_USERS_PER_MAPPING

_HEX_DIGITS = b"0123456789abcdef"


def _hex_count(data: bytes) -> int:
    """How many bytes of ``data`` are lowercase hex digits (a C-speed pass, no regex)."""
    return len(data) - len(data.translate(None, _HEX_DIGITS))


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


@dataclass(frozen=True)
class MappingSummary:
    """A valid mapping request without its members: what sink mode keeps."""

    advertiser_ids: list[str]
    action: str
    id_schema: list[str]
    users: int
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
    return _parse_compact(raw) or _parse_mapping_fast(raw) or parse_mapping_exactly(json_object(raw))


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
        joined = "".join(column).encode()
        if {len(d) for d in column} - {expected} or _hex_count(joined) != len(joined):
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


def _declared_schema(raw: bytes) -> list[str] | None:
    """The body's ``id_schema`` if it is a valid one, read without parsing the rest."""
    schema_field = _SCHEMA_FIELD.search(raw)
    if schema_field is None:
        return None
    try:
        schema = orjson.loads(schema_field.group(1))
    except orjson.JSONDecodeError:
        return None
    if not schema or any(s not in ID_LENGTHS for s in schema) or len(set(schema)) != len(schema):
        return None
    return schema


def _parse_mapping_fast(raw: bytes) -> MappingRequest | None:
    schema = _declared_schema(raw)
    batch_key = _BATCH_KEY.search(raw)
    if schema is None or batch_key is None:
        return None
    batch = _batch_pattern(tuple(schema)).match(raw, batch_key.end())
    if batch is None:
        return None
    start, end = batch_key.end(), batch.end()
    head = _head(raw, start, end, schema)
    if head is None:
        return None
    rows = raw.count(b"{", start, end) // len(schema)  # the pattern allows exactly len(schema) cells a row
    finder = _IDS if len(schema) == 1 else _FIRST_ID_OF_ROW
    member_keys = finder.findall(raw, start, end)
    if len(member_keys) != rows or rows > MAX_USERS_PER_MAPPING:
        return None  # a row with no id, or too many users: the exact path names the error
    return MappingRequest(*head, schema, member_keys, _audience_ids(raw, start, end))


def _head(raw: bytes, start: int, end: int, schema: list[str]) -> tuple[list[str], str] | None:
    """Advertiser ids and action from everything but ``raw[start:end]`` (the ``batch_data`` value)."""
    try:
        head = orjson.loads(raw[:start] + b"null" + raw[end:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(head, dict) or head.get("id_schema") != schema or head.get("action") not in ("add", "delete"):
        return None
    advertiser_ids = head.get("advertiser_ids")
    if not isinstance(advertiser_ids, list) or not advertiser_ids:
        return None
    return [str(a) for a in advertiser_ids], head["action"]


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


# --- compact path --------------------------------------------------------------------------------

_CELL_OPEN = np.frombuffer(b'{"id":"', dtype=np.uint8)
_AUDIENCE_KEY = b'","audience_ids":'
_FILLED = 2  # stands for a whole filled cell in the skeleton; JSON never holds this raw byte


@lru_cache(maxsize=64)
def _skeleton_pattern(width: int) -> re.Pattern[bytes]:
    """Rows of exactly ``width`` cells once filled cells shrink to one marker byte each."""
    cell = rb"(?:\x02|\{\})"
    row = rb"\[" + cell + (rb"," + cell) * (width - 1) + rb"\]"
    return re.compile(rb"\[" + row + rb"(?:," + row + rb")*+\]")


def _parse_compact(raw: bytes) -> MappingRequest | None:
    compact = _compact_rows(raw)
    if compact is None:
        return None
    advertiser_ids, action, schema, audience_ids, region, (starts, ends) = compact
    members = list(map(region.__getitem__, map(slice, starts.tolist(), ends.tolist())))
    return MappingRequest(advertiser_ids, action, schema, members, audience_ids)


def summarise_mapping(raw: bytes) -> MappingSummary:
    """What sink mode needs: every rule checked as ``parse_mapping`` does, the users only counted.

    Compact bodies are counted from byte offsets, without one Python object per user; others take the
    full parse.
    """
    compact = _compact_rows(raw)
    if compact is not None:
        advertiser_ids, action, schema, audience_ids, _, (starts, _) = compact
        return MappingSummary(advertiser_ids, action, schema, len(starts), audience_ids)
    parsed = parse_mapping(raw)
    return MappingSummary(
        parsed.advertiser_ids, parsed.action, parsed.id_schema, len(parsed.member_keys), parsed.audience_ids
    )


def _compact_rows(raw: bytes) -> tuple[list[str], str, list[str], set[str], bytes, tuple] | None:
    """Advertisers, action, schema, audience ids, the ``batch_data`` bytes and the (start, end) offsets
    of each row's first id in them, for a valid compact body; None for anything else."""
    schema = _declared_schema(raw)
    batch_key = raw.find(b'"batch_data":[[')
    if schema is None or batch_key < 0:
        return None
    start = batch_key + len(b'"batch_data":')
    end = raw.rfind(b"]]", start) + 2  # the array's end, if it is the last "]]" (else a check below fails)
    region = raw[start:end]
    audiences_at = region.find(_AUDIENCE_KEY)
    audiences_end = region.find(b"]", audiences_at) + 1
    if end < 2 or audiences_at < 0 or audiences_end == 0 or any(w in region for w in (b" ", b"\n", b"\r", b"\t")):
        return None
    cell_tail = region[audiences_at:audiences_end] + b"}"  # every filled cell must end so: one list
    try:
        audience_list = orjson.loads(cell_tail[len(_AUDIENCE_KEY) : -1])
    except orjson.JSONDecodeError:
        return None
    first_ids = _first_ids_of_rows(region, cell_tail, [ID_LENGTHS[name] for name in schema])
    head = _head(raw, start, end, schema)
    if first_ids is None or head is None or not isinstance(audience_list, list) or not audience_list:
        return None
    return *head, schema, {str(a) for a in audience_list}, region, first_ids


def _first_ids_of_rows(region: bytes, cell_tail: bytes, widths: list[int]) -> tuple | None:
    """Start and end offsets (numpy arrays) of each row's first id, if every filled cell is
    ``{"id":"<hex>`` + ``cell_tail``, every row has ``len(widths)`` cells and at least one id, and each id
    has its column's width. Else None."""
    chars = np.frombuffer(region, dtype=np.uint8)
    size = len(chars)
    braces = np.flatnonzero(chars == ord("{"))
    braces = braces[braces + len(_CELL_OPEN) < size]
    is_filled = np.ones(len(braces), dtype=bool)
    for offset, byte in enumerate(_CELL_OPEN[1:], start=1):
        is_filled &= chars[braces + offset] == byte
    opens = braces[is_filled]
    id_starts = opens + len(_CELL_OPEN)
    quotes = np.flatnonzero(chars == ord('"'))
    after = np.searchsorted(quotes, id_starts)
    if not len(opens) or (after >= len(quotes)).any():
        return None
    id_ends = quotes[after]
    cell_ends = id_ends + len(cell_tail)
    if cell_ends[-1] > size or (opens[1:] < cell_ends[:-1]).any():
        return None
    tail = np.frombuffer(cell_tail, dtype=np.uint8)
    if not (chars[id_ends[:, None] + np.arange(len(tail))] == tail).all():
        return None
    # The skeleton: the bytes between filled cells, each filled cell shrunk to its "{" -> marker.
    kept_from = np.concatenate(([0], cell_ends))
    kept_to = np.concatenate((opens + 1, [size]))
    lengths = kept_to - kept_from
    placed = np.cumsum(lengths)
    skeleton = chars[np.repeat(kept_from - (placed - lengths), lengths) + np.arange(placed[-1])]
    skeleton[placed[:-1] - 1] = _FILLED
    if _skeleton_pattern(len(widths)).fullmatch(skeleton.tobytes()) is None:
        return None
    cells = np.flatnonzero((skeleton == _FILLED) | (skeleton == ord("{")))
    filled = np.flatnonzero(skeleton[cells] == _FILLED)
    rows = len(cells) // len(widths)
    id_lengths = id_ends - id_starts
    if rows > MAX_USERS_PER_MAPPING or (id_lengths != np.asarray(widths)[filled % len(widths)]).any():
        return None
    # Ids are all hex iff the region holds exactly as many hex bytes as the ids and cell frames do
    # (the skeleton, checked above, holds none): one counting pass instead of gathering every id byte.
    per_cell = _hex_count(_CELL_OPEN.tobytes() + cell_tail)
    if _hex_count(region) != int(id_lengths.sum()) + len(opens) * per_cell:
        return None
    row_of_id = filled // len(widths)
    first = np.concatenate(([True], row_of_id[1:] != row_of_id[:-1]))
    if int(first.sum()) != rows:
        return None  # a row without any id: the exact parser names it
    return id_starts[first], id_ends[first]
