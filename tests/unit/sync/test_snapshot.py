"""The mirror snapshot on a real SQLite warehouse: fingerprints of all members, digests of the leaving only."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.sync.mirror import Snapshot, fingerprints, hex_digests, plan_mirror
from airflow_provider_tiktok.warehouse import Warehouse

FIELDS = ["email", "phone"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def snapshot(tmp_path, monkeypatch) -> Snapshot:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    snapshot = Snapshot(Warehouse("warehouse"), "snapshot", "7000000000001", "7100000000001")
    snapshot.ensure()
    return snapshot


def add_batch(keys: list[str], emails: list[str | None], phones: list[str | None]) -> UserBatch:
    columns = (pa.array([sha(e) if e else None for e in emails]), pa.array([sha(p) if p else None for p in phones]))
    return UserBatch(1, ("EMAIL_SHA256", "PHONE_SHA256"), columns, "add", pa.array(keys))


def test_members_come_back_as_fingerprints_and_leaving_members_digests_read_back_in_key_batches(snapshot):
    users = 2000  # more than one IN-list of keys
    keys = [f"u{i}" for i in range(users)]
    snapshot.apply(
        add_batch(keys, [f"{k}@x.com" for k in keys], [None if i % 2 else f"+1{i}" for i in range(users)]), FIELDS
    )
    previous = snapshot.fingerprints()
    assert previous.num_rows == users and previous.column("fingerprint").null_count == 0

    leaving = pa.array(keys[:1500])
    sent = snapshot.digests_of(leaving, FIELDS)
    assert sorted(sent.column("user_key").to_pylist()) == sorted(leaving.to_pylist())
    by_key = {row["user_key"]: row for row in sent.to_pylist()}
    assert by_key["u0"]["email"] == hashlib.sha256(b"u0@x.com").digest() and by_key["u1"]["phone"] is None
    # What was stored is what the diff recomputes from the same digests: an unchanged user stays unchanged.
    stored = dict(zip(previous.column("user_key").to_pylist(), previous.column("fingerprint").to_pylist(), strict=True))
    recomputed = fingerprints(sent, FIELDS).to_pylist()
    assert [stored[k] for k in sent.column("user_key").to_pylist()] == recomputed


def test_a_member_without_a_fingerprint_is_planned_as_changed_and_loses_nothing_it_still_carries(snapshot):
    snapshot.apply(add_batch(["a", "b"], ["a@x.com", "b@x.com"], [None, None]), FIELDS)
    snapshot.warehouse.execute(("UPDATE snapshot SET fingerprint = NULL WHERE user_key = 'a'", ()))
    stored = snapshot.digests_of(pa.array(["a", "b"]), FIELDS)
    current = pa.table({"user_key": stored["user_key"], **{f: hex_digests(stored[f].combine_chunks()) for f in FIELDS}})
    current = current.append_column("fingerprint", fingerprints(current, FIELDS))
    plan = plan_mirror(current, snapshot.fingerprints(), FIELDS, lambda keys: snapshot.digests_of(keys, FIELDS))
    assert (plan.changed, plan.unchanged, plan.departed) == (1, 1, 0)
    assert plan.adds.column("user_key").to_pylist() == ["a"] and plan.removals.num_rows == 0


def test_fingerprints_tell_which_identifier_is_missing():
    digest = hashlib.sha256(b"x").digest()
    table = pa.table({"email": pa.array([digest, None], pa.binary()), "phone": pa.array([None, digest], pa.binary())})
    first, second = fingerprints(table, FIELDS).to_pylist()
    assert first != second
