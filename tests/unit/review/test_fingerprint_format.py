"""Snapshot fingerprints are stored in the warehouse: a later version must compute the same values, or its first
mirror run sees every member as changed and sends the whole audience again. These values pin the format."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from airflow_provider_tiktok.sync.mirror import fingerprints

EMAIL = hashlib.sha256(b"a@x.io").digest()
PHONE = hashlib.md5(b"+15550100").digest()


def test_stored_fingerprints_keep_their_values_across_versions():
    table = pa.table(
        {
            "email": pa.array([EMAIL, None, EMAIL], pa.binary()),
            "phone": pa.array([None, PHONE, PHONE], pa.binary()),
        }
    )
    assert fingerprints(table, ["email", "phone"]).to_pylist() == [
        -7538111734997134607,
        -5831343064615158108,
        5077289274097258901,
    ]


def test_field_order_and_a_match_field_nobody_has_leave_fingerprints_unchanged():
    """Adding a match field to a mirror sync must not make every member look changed."""
    table = pa.table({"email": pa.array([EMAIL, None], pa.binary()), "phone": pa.array([None, PHONE], pa.binary())})
    before = fingerprints(table, ["email", "phone"]).to_pylist()
    wider = table.append_column("idfa", pa.nulls(2, pa.binary()))
    assert fingerprints(wider, ["idfa", "phone", "email"]).to_pylist() == before
    swapped = pa.table({"email": table.column("phone"), "phone": table.column("email")})
    assert set(fingerprints(swapped, ["email", "phone"]).to_pylist()).isdisjoint(before)  # which field, not just what


def test_a_digest_read_back_at_an_offset_has_the_fingerprint_it_was_stored_with():
    """Arrow slices (a batch of a larger table) start mid-buffer; the fingerprint must not depend on it."""
    column = pa.array([PHONE, EMAIL, None, EMAIL], pa.binary())
    whole = fingerprints(pa.table({"email": column}), ["email"]).to_pylist()
    sliced = fingerprints(pa.table({"email": column.slice(1)}), ["email"]).to_pylist()
    assert sliced == whole[1:] and whole[1] == whole[3] and len(set(whole)) == 3
