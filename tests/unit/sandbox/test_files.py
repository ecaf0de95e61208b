"""Customer files are read as TikTok documents them, and refusals never echo a line."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from airflow_provider_tiktok.sandbox.files import check_signature, read_digests
from airflow_provider_tiktok.sandbox.payloads import ApiError
from airflow_provider_tiktok.sandbox.settings import EmulatorSettings

SHAS = [hashlib.sha256(str(n).encode()).hexdigest().encode() for n in range(3)]
MD5S = [hashlib.md5(str(n).encode()).hexdigest().encode() for n in range(3)]


def read(content: bytes, calculate_type: str = "EMAIL_SHA256", **options) -> list[bytes]:
    options = {"max_bytes": 10_000, "accept_gzip": False, **options}
    return read_digests(content, calculate_type, **options)


@pytest.mark.parametrize(
    "content",
    [
        b"\n".join(SHAS),
        b"\n".join(SHAS) + b"\n",
        b"\r\n".join(SHAS) + b"\r\n",
        b"EMAIL_SHA256\n" + b"\n".join(SHAS),
        b"email\n" + b"\n".join(SHAS),
    ],
    ids=["plain", "final-newline", "crlf", "type-header", "name-header"],
)
def test_plain_text_with_or_without_a_header_row(content):
    assert read(content) == SHAS


def test_digest_width_follows_the_calculate_type():
    assert read(b"\n".join(MD5S), "GAID_MD5") == MD5S
    with pytest.raises(ApiError) as caught:
        read(b"\n".join(MD5S), "EMAIL_SHA256")
    assert caught.value.code == 40062 and "Line 1" in caught.value.message


def test_an_unhashed_line_is_refused_by_number_and_never_echoed():
    with pytest.raises(ApiError) as caught:
        read(b"\n".join([*SHAS, b"jane@example.com"]))
    assert caught.value.code == 40062 and "Line 4" in caught.value.message and "jane" not in caught.value.message


def test_an_unhashed_first_line_is_not_mistaken_for_a_header():
    with pytest.raises(ApiError) as caught:
        read(b"\n".join([b"jane@example.com", *SHAS]))
    assert "Line 1" in caught.value.message


@pytest.mark.parametrize(
    ("content", "options"),
    [
        (b"PK\x03\x04rest-of-a-zip", {}),
        (gzip.compress(b"\n".join(SHAS)), {}),
        (b"\n".join(SHAS), {"max_bytes": 100}),
        (gzip.compress(b"\n".join(SHAS * 100)), {"accept_gzip": True, "max_bytes": 1_000}),
        (b"\x1f\x8bnot really gzip", {"accept_gzip": True}),
        (b"", {}),
    ],
    ids=["zip", "gzip-not-accepted", "too-large", "too-large-inflated", "corrupt-gzip", "empty"],
)
def test_refused_files(content, options):
    with pytest.raises(ApiError) as caught:
        read(content, **options)
    assert caught.value.code == 40002


def test_gzip_is_read_when_accepted():
    assert read(gzip.compress(b"\n".join(SHAS)), accept_gzip=True) == SHAS


def test_signature_is_the_md5_of_the_bytes_sent():
    check_signature(b"abc", hashlib.md5(b"abc").hexdigest())
    for wrong in ("", hashlib.md5(b"abd").hexdigest()):
        with pytest.raises(ApiError):
            check_signature(b"abc", wrong)


def test_business_centers_default_to_the_tokens_advertisers():
    assert EmulatorSettings().business_center_of("1", ["1", "2"]) == {"1", "2"}
    configured = EmulatorSettings(business_centers=(frozenset({"1", "2"}), frozenset({"3"})))
    assert configured.business_center_of("1", ["1", "2", "3"]) == {"1", "2"}
    assert configured.business_center_of("4", ["4", "5"]) == {"4"}
    with pytest.raises(ValueError):
        EmulatorSettings(mapping_mode="lenient")
