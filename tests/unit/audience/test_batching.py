"""A staged batch keeps binary digests of present ids only, and reads back to the same request."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch

SCHEMA = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_MD5", "AAID_SHA256")


def digest(algorithm: str, value: int) -> str:
    return hashlib.new(algorithm, str(value).encode()).hexdigest()


def batch(users: int) -> UserBatch:
    email = pa.array([digest("sha256", i) for i in range(users)])
    phone = pa.array([digest("sha256", -i) if i % 2 else None for i in range(users)], pa.string())
    idfa = pa.array([digest("md5", i) if i % 3 == 0 else None for i in range(users)], pa.string())
    gaid = pa.array([None] * users, pa.string())
    return UserBatch(7, SCHEMA, (email, phone, idfa, gaid))


@pytest.mark.parametrize("users", [1, 9, 10_000])
def test_a_staged_batch_reads_back_to_the_same_digests_and_request_body(users):
    original = batch(users)
    restored = UserBatch.from_bytes(7, original.to_bytes())
    assert restored.id_schema == SCHEMA and restored.rows() == original.rows()
    assert restored.batch_data_json(["55"]) == original.batch_data_json(["55"])


def test_staged_bytes_are_binary_digests_plus_a_presence_bit_per_id():
    staged = batch(10_000).to_bytes()
    digest_bytes = 10_000 * 32 + 5_000 * 32 + 3_334 * 16  # email, phone, idfa present; gaid never
    assert len(staged) - digest_bytes <= 4 * 10_000 // 8 + 100
    assert len(staged) / 10_000 < 60  # hex strings in Arrow IPC took about 200 bytes a user


def test_a_payload_from_an_older_version_is_refused_clearly():
    with pytest.raises(ValueError, match="batch 3 was not written by this version"):
        UserBatch.from_bytes(3, b"ARROW1\x00\x00")
