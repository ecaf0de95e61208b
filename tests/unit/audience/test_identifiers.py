"""Normalisation and hashing rules per field (SPEC §2), with digests computed from literal strings."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.identifiers import (
    FieldRules,
    MatchField,
    digest_heads,
    id_schema_for,
    key_text,
    prepare_field,
)
from airflow_provider_tiktok.audience.prepare import user_key_hashes
from airflow_provider_tiktok.exceptions import TikTokConfigurationError


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def fullwidth(text: str) -> str:
    """The fullwidth twin of ASCII text (U+FF01 onwards), as East Asian input methods type it."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def digests(values, field: MatchField, **rules) -> list[str | None]:
    return prepare_field(pd.Series(values, dtype=object), field, FieldRules(**rules)).digests.to_pylist()


def test_email_is_trimmed_and_lowercased_before_hashing():
    assert digests(["  Jane.Doe@Example.COM \t"], MatchField.EMAIL) == [sha256("jane.doe@example.com")]


def test_unicode_email_is_lowercased_by_unicode_rules():
    assert digests(["ÉLODIE@exemple.fr"], MatchField.EMAIL) == [sha256("élodie@exemple.fr")]


@pytest.mark.parametrize("bad", ["not-an-email", "a@b", "a b@c.com", "@example.com", "a@@b.com"])
def test_strings_that_are_not_addresses_are_invalid(bad):
    outcome = prepare_field(pd.Series([bad], dtype=object), MatchField.EMAIL, FieldRules())
    assert outcome.digests.to_pylist() == [None]
    assert outcome.present.tolist() == [True] and outcome.valid.tolist() == [False]


@pytest.mark.parametrize("missing", [None, np.nan, "", "   "])
def test_empty_values_are_missing_not_invalid(missing):
    outcome = prepare_field(pd.Series([missing], dtype=object), MatchField.EMAIL, FieldRules())
    assert outcome.present.tolist() == [False] and outcome.valid.tolist() == [False]


def test_gmail_canonicalisation_is_opt_in():
    raw = ["J.Doe+ads@googlemail.com"]
    assert digests(raw, MatchField.EMAIL) == [sha256("j.doe+ads@googlemail.com")]
    assert digests(raw, MatchField.EMAIL, normalize_gmail=True) == [sha256("jdoe@gmail.com")]


def test_gmail_canonicalisation_leaves_other_domains_alone():
    assert digests(["j.doe+x@example.com"], MatchField.EMAIL, normalize_gmail=True) == [sha256("j.doe+x@example.com")]


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+16577770000", "+16577770000"),
        (" +1 (657) 777-0000 ", "+16577770000"),
        ("011 1 657 777 0000", "+16577770000"),
        ("(657) 777-0000", "+16577770000"),
        ("1-657-777-0000", "+16577770000"),
        ("657.777.0000", "+16577770000"),
    ],
)
def test_phones_become_e164_with_a_default_country(raw, e164):
    assert digests([raw], MatchField.PHONE, default_phone_country="US") == [sha256(e164)]


def test_national_numbers_use_the_trunk_prefix_rule_of_the_country():
    assert digests(["07700 900123"], MatchField.PHONE, default_phone_country="GB") == [sha256("+447700900123")]


@pytest.mark.parametrize(
    ("country", "raw", "expected"),
    [
        (
            "GB",
            ["07700 900123", "7700900123", "447700900123", "+44 7700 900123", "077", "07700-900123 x3"],
            ["+447700900123", "+447700900123", "+447700900123", "+447700900123", None, "+447700900123"],
        ),
        (
            "ES",
            ["612 345 678", "34612345678", "0612345678", "+34 612 345 678"],
            ["+34612345678", "+34612345678", None, "+34612345678"],
        ),
    ],
)
def test_country_rules_apply_row_by_row_in_one_chunk(country, raw, expected):
    want = [sha256(e) if e else None for e in expected]
    assert digests(raw, MatchField.PHONE, default_phone_country=country) == want


def test_national_numbers_without_a_default_country_are_invalid():
    assert digests(["(657) 777-0000"], MatchField.PHONE) == [None]


def test_phone_stored_as_integer_or_float_is_read_as_digits():
    as_int = prepare_field(pd.Series([16577770000]), MatchField.PHONE, FieldRules(default_phone_country="US"))
    as_float = prepare_field(
        pd.Series([16577770000.0, np.nan]), MatchField.PHONE, FieldRules(default_phone_country="US")
    )
    assert as_int.digests.to_pylist() == [sha256("+16577770000")]
    assert as_float.digests.to_pylist() == [sha256("+16577770000"), None]
    assert as_float.present.tolist() == [True, False]


def test_fractional_number_is_invalid_rather_than_missing():
    outcome = prepare_field(pd.Series([12.5]), MatchField.PHONE, FieldRules(default_phone_country="US"))
    assert outcome.present.tolist() == [True] and outcome.valid.tolist() == [False]


@pytest.mark.parametrize("bad", ["+0123456789", "+1234", "+1 657 ABC 0000", "+1234567890123456"])
def test_phones_that_cannot_be_e164_are_invalid(bad):
    assert digests([bad], MatchField.PHONE, default_phone_country="US") == [None]


def test_device_ids_are_lowercased_uuids_hashed_with_sha256_by_default():
    raw = " 6D92078A-8246-4BA4-AE5B-76104861E7DC "
    lowered = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    assert digests([raw], MatchField.IDFA) == [sha256(lowered)]
    assert digests([raw], MatchField.GAID, device_id_hash="md5") == [md5(lowered)]


@pytest.mark.parametrize(
    "bad",
    [
        "6D92078A82464BA4AE5B76104861E7DC",
        "6d92078a-8246-4ba4-ae5b-76104861e7d",
        "zz92078a-8246-4ba4-ae5b-76104861e7dc",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_malformed_or_zeroed_device_ids_are_invalid(bad):
    assert digests([bad], MatchField.IDFA) == [None]


def test_already_hashed_values_pass_through_only_when_opted_in():
    hashed = sha256("jane@example.com").upper()
    assert digests([hashed], MatchField.EMAIL) == [None]
    assert digests([hashed], MatchField.EMAIL, accept_hashed=True) == [hashed.lower()]


def test_pass_through_is_anchored_to_a_whole_digest():
    almost = "x" + sha256("a")[1:]
    longer = sha256("a") + "0"
    assert digests([almost, longer], MatchField.EMAIL, accept_hashed=True) == [None, None]


def test_md5_pass_through_needs_md5_schema_length():
    assert digests([md5("x")], MatchField.IDFA, accept_hashed=True, device_id_hash="md5") == [md5("x")]
    assert digests([md5("x")], MatchField.IDFA, accept_hashed=True) == [None]


def test_id_schema_names_follow_field_and_algorithm():
    assert id_schema_for(MatchField.EMAIL) == "EMAIL_SHA256"
    assert id_schema_for(MatchField.PHONE, "md5") == "PHONE_SHA256"
    assert id_schema_for(MatchField.GAID, "md5") == "AAID_MD5"
    assert id_schema_for(MatchField.IDFA) == "IDFA_SHA256"


def test_unknown_settings_are_refused_with_the_option_named():
    with pytest.raises(TikTokConfigurationError, match="default_phone_country"):
        FieldRules(default_phone_country="XX")
    with pytest.raises(TikTokConfigurationError, match="device_id_hash"):
        FieldRules(device_id_hash="sha1")


def test_parsing_a_dag_file_does_not_load_the_hashing_engine():
    probe = "import sys, airflow_provider_tiktok.operators.tiktok; print('datafusion' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert digests(["a@b.co"], MatchField.EMAIL) == [sha256("a@b.co")]  # and hashing loads it on demand


@pytest.mark.parametrize(
    ("country", "raw", "e164"),
    [
        ("GB", "+44 20 7946 0958", "+442079460958"),
        ("GB", "0044 20 7946 0958", "+442079460958"),
        ("US", "011 44 20 7946 0958", "+442079460958"),
        ("CA", "011 44 20 7946 0958", "+442079460958"),
        ("RU", "810 44 20 7946 0958", "+442079460958"),
        ("GB", "020 7946 0958", "+442079460958"),
        ("GB", "+44 (0)20 7946 0958", "+442079460958"),
        ("US", "1 (650) 555-0002", "+16505550002"),
        ("US", "(650) 555-0002 ext. 12", "+16505550002"),
        ("US", "650-555-0002 x12", "+16505550002"),
        ("US", "+1 650 555 0002;ext=12", "+16505550002"),
        ("US", "tel:+1-650-555-0002", "+16505550002"),
        ("GB", fullwidth("+44 20 7946 0958"), "+442079460958"),
        ("GB", "+44\u200b20 7946 0958", "+442079460958"),
        ("KE", "0712 123456", "+254712123456"),
        ("AR", "011 15-2345-6789", "+5491123456789"),
    ],
)
def test_phones_of_any_region_in_international_national_and_dialled_forms(country, raw, e164):
    assert digests([raw], MatchField.PHONE, default_phone_country=country) == [sha256(e164)]


@pytest.mark.parametrize(
    "bad",
    [
        "+999 123 4567",
        "+44 123",
        "+44 20 7946 0958 1234 5678",
        "00 44 20 7946 0958",
        "+",
        "n/a",
        "555-CALL-NOW",
        "650-555-0002 x1234567890",  # ten digits after "x" are no extension
    ],
)
def test_plus_numbers_with_no_such_calling_code_or_length_and_foreign_prefixes_are_invalid(bad):
    outcome = prepare_field(pd.Series([bad]), MatchField.PHONE, FieldRules(default_phone_country="US"))
    assert outcome.present.tolist() == [True] and outcome.valid.tolist() == [False]


def test_each_row_reads_national_numbers_in_its_own_country():
    phones = pd.Series(["020 7946 0958", "(650) 555-0002", "06 12 34 56 78", "0712 123456", "0712 123456", "+33 6 12"])
    countries = pd.Series(["GB", "us", None, " ke ", "XX", "FR"])
    outcome = prepare_field(phones, MatchField.PHONE, FieldRules(default_phone_country="FR"), countries)
    assert outcome.digests.to_pylist() == [
        sha256("+442079460958"),
        sha256("+16505550002"),
        sha256("+33612345678"),  # no country: the default
        sha256("+254712123456"),
        None,  # a country nobody knows: invalid, never a crash
        None,
    ]
    assert outcome.valid.tolist() == [True, True, True, True, False, False]


def test_any_region_phonenumbers_knows_is_a_valid_default_and_others_are_refused():
    assert FieldRules(default_phone_country="ke").default_phone_country == "ke"
    with pytest.raises(TikTokConfigurationError, match="'ZZ' is not a region"):
        FieldRules(default_phone_country="ZZ")


def test_emails_lose_invisible_characters_and_fold_fullwidth_letters():
    raw = ["\u200bJane@Example.com\ufeff", fullwidth("jane@example.com"), "ja\u00adne@example.com"]
    assert digests(raw, MatchField.EMAIL) == [sha256("jane@example.com")] * 3


@pytest.mark.parametrize(
    "bad",
    [
        "a" * 245 + "@example.com",  # 257 characters
        "jane@localhost",
        '["jane@example.com"]',
        '"jane"@example.com',
        "jane@example.com, joe@example.com",
        ["jane@example.com"],
        {"email": "jane@example.com"},
    ],
)
def test_emails_that_are_too_long_dotless_or_not_one_scalar_address_are_invalid(bad):
    outcome = prepare_field(pd.Series([bad, "ok@example.com"], dtype=object), MatchField.EMAIL, FieldRules())
    assert outcome.present.tolist() == [True, True] and outcome.valid.tolist() == [False, True]


def test_an_address_of_254_characters_is_still_valid():
    address = "a" * 242 + "@example.com"
    assert len(address) == 254 and digests([address], MatchField.EMAIL) == [sha256(address)]


def test_gmail_canonicalisation_touches_only_gmail_and_googlemail():
    raw = ["j.doe+x@gmail.com", "j.doe+x@gmail.co", "j.doe+x@mail.gmail.com"]
    assert digests(raw, MatchField.EMAIL, normalize_gmail=True) == [
        sha256("jdoe@gmail.com"),
        sha256("j.doe+x@gmail.co"),
        sha256("j.doe+x@mail.gmail.com"),
    ]


HOSTILE_CELLS = [
    "\u200b\u200d\ufeff",  # invisible only: missing
    "x" * 100_000,
    ["+16505550002"],
    {"phone": "+16505550002"},
    b"\xff\xfe+1650",
    Decimal("12.5"),
    Decimal("NaN"),
    Decimal("sNaN"),
    float("inf"),
    True,
    np.bool_(False),
    object(),
]


@pytest.mark.parametrize("field", list(MatchField))
def test_hostile_cells_never_fail_a_chunk_and_never_count_as_valid(field):
    good = {
        MatchField.EMAIL: "ok@example.com",
        MatchField.PHONE: "+16505550002",
        MatchField.IDFA: "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        MatchField.GAID: "6d92078a-8246-4ba4-ae5b-76104861e7dc",
    }[field]
    outcome = prepare_field(pd.Series([*HOSTILE_CELLS, good], dtype=object), field, FieldRules())
    assert outcome.valid.tolist() == [False] * len(HOSTILE_CELLS) + [True]
    assert outcome.present.tolist() == [False, *[True] * 5, False, False, *[True] * 4, True]


def test_numbers_of_any_type_are_read_as_their_digits():
    cells = [6505550002.0, Decimal("6505550002"), np.int64(6505550002), np.float32(2.0**24), 6505550002, b"6505550002"]
    outcome = prepare_field(pd.Series(cells, dtype=object), MatchField.PHONE, FieldRules(default_phone_country="US"))
    assert outcome.digests.to_pylist() == [sha256("+16505550002")] * 3 + [None] + [sha256("+16505550002")] * 2


def test_a_user_key_reads_the_same_whatever_type_a_chunk_gave_it():
    keys = pd.Series([1, 1.0, Decimal(1), np.int64(1), "1", b"1"], dtype=object)
    assert key_text(keys).to_pylist() == ["1"] * 6
    assert len(set(user_key_hashes(keys).tolist())) == 1
    assert user_key_hashes(pd.Series([1.0, 2.5]))[0] == user_key_hashes(pd.Series([1]))[0]
    assert key_text(pd.Series([2.5, np.nan])).to_pylist() == ["2.5", None]
    assert len(set(user_key_hashes(pd.Series(["007", "7", 7], dtype=object)).tolist())) == 2


@pytest.mark.parametrize("dtype", ["float64", "Float64", pd.ArrowDtype(pa.float64())])
def test_whole_numbers_of_any_float_dtype_are_read_as_digits(dtype):
    values = pd.Series([16505550002.0, None, 1.5], dtype=dtype)
    outcome = prepare_field(values, MatchField.PHONE, FieldRules(default_phone_country="US"))
    assert outcome.digests.to_pylist() == [sha256("+16505550002"), None, None]
    assert outcome.present.tolist() == [True, False, True]


@pytest.mark.parametrize("start", [0, 1, 3])
def test_digest_heads_are_the_first_eight_bytes_of_hex_or_raw_digests(start):
    raw = [hashlib.sha256(str(i).encode()).digest() if i % 3 else None for i in range(12)]
    raw[4] = hashlib.md5(b"4").digest()  # a shorter digest in the same column
    expected = [int.from_bytes(d[:8], "little") for d in raw[start:] if d is not None]
    hex_lower = pa.array([d.hex() if d else None for d in raw]).slice(start)
    hex_upper = pa.array([d.hex().upper() if d else None for d in raw]).slice(start)
    binary = pa.array(raw, pa.binary()).slice(start)
    for column in (hex_lower, hex_upper, binary):
        assert digest_heads(column).tolist() == expected
    assert digest_heads(pa.nulls(3, pa.string())).tolist() == digest_heads(pa.array([], pa.binary())).tolist() == []
