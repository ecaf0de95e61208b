"""The fast mapping parsers agree with the exact one, and defer to it for anything unusual."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from airflow_provider_tiktok.sandbox.payloads import (
    ApiError,
    _parse_compact,
    _parse_mapping_fast,
    parse_mapping,
    parse_mapping_exactly,
    summarise_mapping,
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
        ([[{"id": "é" * 64, "audience_ids": ["10"]}]], ("EMAIL_SHA256",), 40062),
        ([[{"id": sha("a"), "audience_ids": ["10"]}]], ("EMAIL_SHA256", "PHONE_SHA256"), 40002),
        ([[{}, {}]], ("EMAIL_SHA256", "PHONE_SHA256"), 40002),
        ([[{"id": sha("a")}]], ("EMAIL_SHA256",), 40002),
        ([[{"id": sha("a"), "audience_ids": ["10"]}]] * 10_001, ("EMAIL_SHA256",), 40061),
        ([[{"id": sha("a"), "audience_ids": ["10"]}]], ("EMAIL_MD5",), 40002),
        ([[{}, {"id": sha("a"), "audience_ids": ["10"]}]], ("EMAIL_SHA256", "IDFA_MD5"), 40062),
        ([[{"id": sha("a")[:32], "audience_ids": ["10"]}, {}]], ("EMAIL_SHA256", "IDFA_MD5"), 40062),
        ([[{"id": sha("a"), "audience_ids": ["10"]}], [{}]], ("EMAIL_SHA256",), 40002),
        ([[{"id": sha("a"), "audience_ids": ["10"]}, {}, {}]], ("EMAIL_SHA256", "PHONE_SHA256"), 40002),
    ],
)
@pytest.mark.parametrize("parse", [parse_mapping, summarise_mapping], ids=["strict", "sink"])
def test_malformed_bodies_get_the_exact_parsers_code(rows, schema, code, parse):
    with pytest.raises(ApiError) as caught:
        parse(orjson.dumps(body(rows, schema)))
    assert caught.value.code == code


def test_key_order_and_extra_fields_fall_back_to_the_exact_parser():
    rows = [[{"audience_ids": ["10"], "id": sha("a")}]]
    raw = orjson.dumps(body(rows, ("EMAIL_SHA256",), note="x"))
    assert _parse_mapping_fast(raw) is None
    assert parse_mapping(raw).member_keys == [sha("a").encode()]


def compact_rows(count: int, schema: tuple[str, ...], audiences: list[str]) -> list[list[dict]]:
    """Rows with a varying pattern of empty cells (never all empty), one shared audience list."""
    width = {"EMAIL_SHA256": 64, "PHONE_SHA256": 64, "IDFA_MD5": 32}
    rows = []
    for i in range(count):
        filled = [(i >> c) & 1 or c == i % len(schema) for c in range(len(schema))]
        rows.append(
            [
                {"id": sha(f"{i}/{c}")[: width[name]], "audience_ids": audiences} if keep else {}
                for c, (name, keep) in enumerate(zip(schema, filled, strict=True))
            ]
        )
    return rows


@pytest.mark.parametrize(
    ("schema", "audiences"),
    [
        (("EMAIL_SHA256",), ["10"]),
        (("EMAIL_SHA256", "PHONE_SHA256", "IDFA_MD5"), ["10"]),
        (("PHONE_SHA256", "IDFA_MD5"), ["10", "11"]),
    ],
)
def test_compact_path_reads_what_the_exact_parser_reads(schema, audiences):
    raw = orjson.dumps(body(compact_rows(500, schema, audiences), schema))
    compact = _parse_compact(raw)
    assert compact is not None
    assert compact == parse_mapping_exactly(orjson.loads(raw))
    assert len(compact.member_keys) == 500


@pytest.mark.parametrize(
    "dumps",
    [
        lambda b: json.dumps(b).encode(),  # ", " and ": " separators
        lambda b: orjson.dumps({**b, "batch_data": b["batch_data"] + [[{"id": sha("z"), "audience_ids": ["11"]}]]}),
    ],
    ids=["whitespace", "two-audience-lists"],
)
def test_compact_path_leaves_other_bodies_to_the_next_parser(dumps):
    raw = dumps(body([[{"id": sha("a"), "audience_ids": ["10"]}]], ("EMAIL_SHA256",)))
    assert _parse_compact(raw) is None
    assert parse_mapping(raw) == parse_mapping_exactly(orjson.loads(raw))


@pytest.mark.parametrize(
    "dumps", [orjson.dumps, lambda b: json.dumps(b, indent=2).encode()], ids=["compact", "indented"]
)
def test_sink_summary_counts_what_the_strict_parser_reads(dumps):
    schema = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_MD5")
    raw = dumps(body(compact_rows(300, schema, ["10", "11"]), schema))
    strict, summary = parse_mapping(raw), summarise_mapping(raw)
    assert summary.users == len(strict.member_keys) == 300
    assert (summary.advertiser_ids, summary.action, summary.id_schema, summary.audience_ids) == (
        strict.advertiser_ids,
        strict.action,
        strict.id_schema,
        strict.audience_ids,
    )
