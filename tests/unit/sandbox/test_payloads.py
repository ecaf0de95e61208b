"""The fast mapping parser agrees with the exact one, and defers to it for anything unusual."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from airflow_provider_tiktok.sandbox.payloads import (
    ApiError,
    _parse_mapping_fast,
    parse_mapping,
    parse_mapping_exactly,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def body(rows, schema=("EMAIL_SHA256", "PHONE_SHA256"), **extra) -> dict:
    return {"advertiser_ids": ["1"], "action": "add", "id_schema": list(schema), "batch_data": rows, **extra}


ROWS = [
    [{"id": sha("a"), "audience_ids": ["10"]}, {}],
    [{}, {"id": sha("b"), "audience_ids": ["10", "11"]}],
    [{"id": sha("c"), "audience_ids": ["10"]}, {"id": sha("d"), "audience_ids": ["10"]}],
]


@pytest.mark.parametrize("dumps", [orjson.dumps, lambda b: json.dumps(b, indent=2).encode()])
def test_fast_path_reads_what_the_exact_parser_reads(dumps):
    raw = dumps(body(ROWS))
    fast = _parse_mapping_fast(raw)
    assert fast is not None
    assert fast == parse_mapping_exactly(orjson.loads(raw))
    assert fast.member_keys == [sha("a").encode(), sha("b").encode(), sha("c").encode()]
    assert fast.audience_ids == {"10", "11"}


@pytest.mark.parametrize(
    ("rows", "schema", "code"),
    [
        ([[{"id": "jane@example.com", "audience_ids": ["10"]}]], ("EMAIL_SHA256",), 40062),
        ([[{"id": sha("a").upper(), "audience_ids": ["10"]}]], ("EMAIL_SHA256",), 40062),
        ([[{"id": sha("a"), "audience_ids": ["10"]}]], ("EMAIL_SHA256", "PHONE_SHA256"), 40002),
        ([[{}, {}]], ("EMAIL_SHA256", "PHONE_SHA256"), 40002),
        ([[{"id": sha("a")}]], ("EMAIL_SHA256",), 40002),
        ([[{"id": sha("a"), "audience_ids": ["10"]}]] * 10_001, ("EMAIL_SHA256",), 40061),
        ([[{"id": sha("a"), "audience_ids": ["10"]}]], ("EMAIL_MD5",), 40002),
    ],
)
def test_malformed_bodies_get_the_exact_parsers_code(rows, schema, code):
    with pytest.raises(ApiError) as caught:
        parse_mapping(orjson.dumps(body(rows, schema)))
    assert caught.value.code == code


def test_key_order_and_extra_fields_fall_back_to_the_exact_parser():
    rows = [[{"audience_ids": ["10"], "id": sha("a")}]]
    raw = orjson.dumps(body(rows, ("EMAIL_SHA256",), note="x"))
    assert _parse_mapping_fast(raw) is None
    assert parse_mapping(raw).member_keys == [sha("a").encode()]
