"""Normalisation and hashing rules per field (SPEC §2), with digests computed from literal strings."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from airflow_provider_tiktok.audience.identifiers import FieldRules, MatchField, id_schema_for, prepare_field
from airflow_provider_tiktok.exceptions import TikTokConfigurationError


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


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
        ("001 657 777 0000", "+16577770000"),
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
            ["07700 900123", "7700900123", "447700900123", "+44 7700 900123", "0770090", "07700-9001x3"],
            ["+447700900123", "+447700900123", "+447700900123", "+447700900123", None, None],
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
