"""De-duplication, not-synced reasons, batching and streaming — read as the spec of the core."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from decimal import Decimal

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_tiktok.audience import FieldRules, PrepareOptions, UserPreparer, iter_batches
from airflow_provider_tiktok.audience.batching import validate_batch_size
from airflow_provider_tiktok.audience.keyset import CompactKeySet
from airflow_provider_tiktok.exceptions import TikTokConfigurationError

ALL_FIELDS = {"email": "email", "phone": "phone", "idfa": "idfa"}
OPTIONS = PrepareOptions(ALL_FIELDS, "user_id", FieldRules(default_phone_country="US"))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run(frames, options=OPTIONS, batch_size=10_000, workers=1):
    preparer = UserPreparer(options)
    batches = list(iter_batches(preparer.prepare(frames, workers=workers), options.id_schema, batch_size))
    return preparer.counts, batches


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "email", "phone", "idfa"])


def test_a_user_with_one_good_and_one_bad_field_is_synced_on_the_good_one():
    counts, batches = run([frame([(1, "a@b.com", "12", None)])])
    assert batches[0].rows() == [(sha256("a@b.com"), None, None)]
    assert counts.invalid_by_field == {"phone": 1}
    assert counts.not_synced == {}


def test_not_synced_reasons_name_what_was_wrong():
    counts, batches = run(
        [
            frame(
                [
                    (1, None, None, None),
                    (2, "nope", None, None),
                    (3, None, "123", None),
                    (4, None, None, "not-a-uuid"),
                    (5, "nope", "123", None),
                    (None, "ok@example.com", None, None),
                ]
            )
        ]
    )
    assert batches == []
    assert counts.not_synced == {
        "missing_fields": 1,
        "invalid_email": 2,
        "invalid_phone": 1,
        "invalid_device_id": 1,
        "missing_user_key": 1,
    }


def test_duplicates_by_user_key_or_identity_are_counted_once_across_chunks():
    first = frame([(1, "a@b.com", None, None), (2, "c@d.com", None, None)])
    second = frame([(1, "other@b.com", None, None), (3, " A@B.COM ", None, None), (4, "e@f.com", None, None)])
    counts, batches = run([first, second])
    assert [row[0] for batch in batches for row in batch.rows()] == [
        sha256("a@b.com"),
        sha256("c@d.com"),
        sha256("e@f.com"),
    ]
    assert counts.duplicates == 2 and counts.entered == 5 and counts.prepared == 3


def test_same_email_with_a_different_phone_is_a_different_identity():
    counts, _ = run([frame([(1, "a@b.com", "+16577770000", None), (2, "a@b.com", "+16577770001", None)])])
    assert counts.prepared == 2


def test_batches_are_numbered_deterministically_and_never_exceed_the_limit():
    rows = [(i, f"user{i}@example.com", None, None) for i in range(25)]
    chunks = [frame(rows[:7]), frame(rows[7:19]), frame(rows[19:])]
    _, batches = run(chunks, batch_size=10)
    _, again = run([frame(rows)], batch_size=10)
    assert [(b.number, len(b)) for b in batches] == [(1, 10), (2, 10), (3, 5)]
    assert [b.rows() for b in batches] == [b.rows() for b in again]


def test_batch_payload_aligns_with_id_schema_and_keeps_gaps_as_empty_objects():
    _, [batch] = run([frame([(1, "a@b.com", None, "6d92078a-8246-4ba4-ae5b-76104861e7dc")])])
    assert batch.id_schema == ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256")
    expected = [
        [
            {"id": sha256("a@b.com"), "audience_ids": ["42"]},
            {},
            {"id": sha256("6d92078a-8246-4ba4-ae5b-76104861e7dc"), "audience_ids": ["42"]},
        ]
    ]
    assert orjson.loads(batch.batch_data_json(["42"])) == expected


def test_match_fields_order_does_not_change_the_schema_order():
    options = PrepareOptions({"idfa": "idfa", "email": "email"}, "user_id")
    assert options.id_schema == ("EMAIL_SHA256", "IDFA_SHA256")


def test_configuration_problems_name_the_field_or_column():
    with pytest.raises(TikTokConfigurationError, match="match_fields is empty"):
        PrepareOptions({}, "user_id")
    with pytest.raises(TikTokConfigurationError, match=r"unknown field\(s\) \['fax'\]"):
        PrepareOptions({"fax": "fax"}, "user_id")
    with pytest.raises(TikTokConfigurationError, match=r"no column\(s\) \['phone_number'\]"):
        PrepareOptions({"phone": "phone_number"}, "user_id").check_columns(["user_id", "phone"])


def test_batch_size_outside_tiktok_limit_is_refused():
    with pytest.raises(ValueError, match="between 1 and 10000"):
        validate_batch_size(10_001)


def test_parallel_workers_give_the_same_batches_as_one():
    # Uneven chunks finish out of order on the workers; results must still come back in input order.
    rows = [(i, f"u{i % 400}@example.com", f"+1657777{i:04d}", None) for i in range(3_000)]
    bounds = [0, 2_000, 2_010, 2_500, 2_501, 3_000]
    chunks = [frame(rows[a:b]) for a, b in itertools.pairwise(bounds)]
    one_counts, one = run(chunks, batch_size=250)
    two_counts, two = run(chunks, batch_size=250, workers=3)
    assert one_counts.entered == 3_000 and one_counts.prepared == sum(len(b) for b in one) > 2_500
    assert [b.rows() for b in one] == [b.rows() for b in two]
    assert one_counts == two_counts


def test_compact_key_set_remembers_keys_across_merges():
    keys = CompactKeySet()
    for start in range(0, 1000, 100):
        batch = np.arange(start, start + 100, dtype=np.uint64) * np.uint64(7919)
        assert not keys.contains(batch).any()
        keys.add(batch)
        assert keys.contains(batch).all()
    assert len(keys) == 1000
    assert keys.contains(np.array([7919 * 5, 3], dtype=np.uint64)).tolist() == [True, False]


HEX64 = re.compile(r"^[0-9a-f]{64}$")
values = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.emails(),
    st.from_regex(r"\+[1-9][0-9]{9,12}", fullmatch=True),
    st.uuids().map(str),
    st.integers(min_value=0, max_value=10**14),
)
users = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 60)), values, values, values), min_size=0, max_size=80)


@settings(max_examples=150, deadline=None)
@given(users=users, batch_size=st.integers(1, 17), split=st.integers(1, 40))
def test_every_user_is_accounted_for_once_and_no_raw_value_leaks(users, batch_size, split):
    chunks = [frame(users[i : i + split]) for i in range(0, len(users), split)] or [frame([])]
    counts, batches = run(chunks, batch_size=batch_size)
    sent = sum(len(b) for b in batches)
    assert counts.entered == len(users)
    assert counts.entered == sent + sum(counts.not_synced.values())
    assert all(len(b) <= batch_size for b in batches)
    assert [b.number for b in batches] == list(range(1, len(batches) + 1))
    raw = {str(v).strip().lower() for row in users for v in row[1:] if v is not None and str(v).strip()}
    for batch in batches:
        for row in batch.rows():
            assert any(row)
            for digest in row:
                assert digest is None or (HEX64.match(digest) and digest not in raw)


def test_an_int_key_read_as_float_in_a_chunk_with_a_null_names_the_same_users():
    first = frame([(1, "a@b.com", None, None), (2, "c@d.com", None, None), (3, "e@f.com", None, None)])
    second = frame([(1.0, "other@b.com", None, None), (None, "g@h.com", None, None), (4.0, "i@j.com", None, None)])
    assert second["user_id"].dtype == "float64"
    counts, batches = run([first, second])
    assert counts.prepared == sum(len(b) for b in batches) == 4
    assert counts.not_synced == {"duplicate": 1, "missing_user_key": 1}


def rejects_of(chunks, options=OPTIONS):
    preparer = UserPreparer(options)
    return [users.rejects.to_pylist() for users in preparer.prepare(chunks)], preparer.counts


def test_each_chunk_lists_its_users_not_synced_by_key_reason_and_field_never_an_identifier():
    first = frame(
        [
            (10, "a@b.com", None, None),
            (11, None, None, None),
            (12, "nope", "123", None),
            (13, None, "123", "not-a-uuid"),
            (None, "ok@example.com", None, None),
        ]
    )
    second = frame([(10.0, "c@d.com", None, None), (14.5, " A@B.COM ", None, None), ("k-15", "e@f.com", None, None)])
    rejects, counts = rejects_of([first, second])
    assert rejects == [
        [
            {"user_key": "11", "reason": "missing_fields", "field": None},
            {"user_key": "12", "reason": "invalid_email", "field": "email"},
            {"user_key": "13", "reason": "invalid_phone", "field": "phone"},
            {"user_key": None, "reason": "missing_user_key", "field": None},
        ],
        [
            {"user_key": "10", "reason": "duplicate", "field": None},
            {"user_key": "14.5", "reason": "duplicate", "field": None},
        ],
    ]
    assert sum(len(r) for r in rejects) == sum(counts.not_synced.values())


def test_device_id_rejects_name_which_device_id():
    options = PrepareOptions({"gaid": "gaid"}, "user_id")
    rejects, _ = rejects_of([pd.DataFrame({"user_id": ["u1"], "gaid": ["nope"]})], options)
    assert rejects == [[{"user_key": "u1", "reason": "invalid_device_id", "field": "gaid"}]]


def test_coverage_counts_prepared_users_carrying_each_identifier():
    chunk = frame(
        [
            (1, "a@b.com", "+16505550002", None),
            (2, "c@d.com", "bad", "6d92078a-8246-4ba4-ae5b-76104861e7dc"),
            (3, None, "+16505550003", None),
            (3, "dup@d.com", "+16505550004", None),  # a duplicate carries nothing to coverage
            (4, "nope", None, None),  # not synced
        ]
    )
    counts, _ = run([chunk])
    assert counts.coverage == {"email": 2, "phone": 2, "idfa": 1, "gaid": 0}


def test_phone_country_column_is_a_source_column_only_when_phones_are_matched():
    rules = FieldRules(default_phone_country="US", phone_country_column="country")
    assert PrepareOptions({"phone": "phone"}, "user_id", rules).source_columns == ["user_id", "phone", "country"]
    assert PrepareOptions({"email": "email"}, "user_id", rules).source_columns == ["user_id", "email"]
    with pytest.raises(TikTokConfigurationError, match=r"no column\(s\) \['country'\]"):
        PrepareOptions({"phone": "phone"}, "user_id", rules).check_columns(["user_id", "phone"])


def test_phones_are_read_in_each_users_country():
    options = PrepareOptions({"phone": "phone"}, "user_id", FieldRules(phone_country_column="country"))
    chunk = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "phone": ["020 7946 0958", "(650) 555-0002", "+33 6 12 34 56 78", "0712 123456"],
            "country": ["GB", "US", None, "Narnia"],
        }
    )
    counts, batches = run([chunk], options)
    assert [row[0] for row in batches[0].rows()] == [
        sha256(p) for p in ("+442079460958", "+16505550002", "+33612345678")
    ]
    assert counts.not_synced == {"invalid_phone": 1}


def test_hostile_cells_in_every_column_do_not_fail_the_chunk():
    chunk = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5, 6],
            "email": ["\u200bok@example.com", ["a@b.com"], b"\xff@b.com", "x" * 100_000, Decimal("1"), None],
            "phone": [None, None, None, None, None, 6505550002.0],
            "idfa": [None, {"id": 1}, None, None, np.int64(5), None],
        }
    )
    counts, batches = run([chunk])
    assert counts.prepared == 2 and sum(len(b) for b in batches) == 2
    assert counts.not_synced == {"invalid_email": 4}
    assert batches[0].rows()[1] == (None, sha256("+16505550002"), None)


@settings(max_examples=80, deadline=None)
@given(users=users, split=st.integers(1, 40))
def test_rejects_name_every_user_not_synced_once_by_key_never_by_identifier(users, split):
    chunks = [frame(users[i : i + split]) for i in range(0, len(users), split)] or [frame([])]
    rejects, counts = rejects_of(chunks)
    rows = [row for chunk in rejects for row in chunk]
    assert Counter(row["reason"] for row in rows) == counts.not_synced
    keys = {str(key) for key, *_ in users if key is not None}
    assert all((row["user_key"] is None) == (row["reason"] == "missing_user_key") for row in rows)
    assert all(row["user_key"] is None or row["user_key"] in keys for row in rows)
