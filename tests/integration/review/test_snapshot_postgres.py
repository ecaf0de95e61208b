"""The mirror snapshot on a real PostgreSQL server: 64-bit fingerprints (negative ones too) come back as written,
unchanged users are found by them alone, and leaving users' digests are read back across several IN-lists."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.sync.mirror import Snapshot, fingerprints, hex_digests, plan_mirror
from airflow_provider_tiktok.warehouse import Warehouse

FIELDS = ["email", "phone"]
USERS = 2_000  # more than two IN-lists of keys


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def snapshot(postgres_server, monkeypatch) -> Snapshot:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "postgres", **postgres_server}))
    warehouse = Warehouse("warehouse")
    warehouse.execute(("DROP TABLE IF EXISTS review_snapshot", ()))
    snapshot = Snapshot(warehouse, "review_snapshot", "7000000000001", "7100000000001")
    snapshot.ensure()
    return snapshot


def test_fingerprints_round_trip_on_postgres_and_only_leaving_users_digests_are_read(snapshot):
    keys = [f"u{i}" for i in range(USERS)]
    emails = [sha(f"{k}@x.io") for k in keys]
    phones = [None if i % 3 else sha(f"+1555{i:07d}") for i in range(USERS)]
    snapshot.apply(
        UserBatch(1, ("EMAIL_SHA256", "PHONE_SHA256"), (pa.array(emails), pa.array(phones)), "add", pa.array(keys)),
        FIELDS,
    )
    [(kind,)] = snapshot.warehouse.query(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'review_snapshot' "
        "AND column_name = 'fingerprint'"
    )
    assert kind == "bigint"
    previous = snapshot.fingerprints()
    stored = previous.column("fingerprint").to_pylist()
    assert previous.num_rows == USERS and None not in stored
    assert min(stored) < 0 < max(stored)  # the whole signed 64-bit range survives the round trip

    current = snapshot.digests_of(pa.array(keys), FIELDS)
    assert current.num_rows == USERS  # read back across three IN-lists
    by_key = dict(zip(previous.column("user_key").to_pylist(), stored, strict=True))
    assert fingerprints(current, FIELDS).to_pylist() == [by_key[k] for k in current.column("user_key").to_pylist()]

    asked: list[list[str]] = []

    def digests_of(user_keys: pa.Array) -> pa.Table:
        asked.append(user_keys.to_pylist())
        return snapshot.digests_of(user_keys, FIELDS)

    departed, changed = keys[:950], keys[950]
    as_prepared = pa.table(
        {"user_key": current["user_key"], **{f: hex_digests(current[f].combine_chunks()) for f in FIELDS}}
    )
    staying = as_prepared.filter(pa.compute.invert(pa.compute.is_in(as_prepared["user_key"], pa.array(departed))))
    staying = staying.set_column(
        1,
        "email",
        pa.array(
            [
                hashlib.sha256(b"new").hexdigest() if k == changed else e
                for k, e in zip(
                    staying.column("user_key").to_pylist(), staying.column("email").to_pylist(), strict=True
                )
            ],
            pa.string(),
        ),
    )
    staying = staying.append_column("fingerprint", fingerprints(staying, FIELDS))
    plan = plan_mirror(staying, snapshot.fingerprints(), FIELDS, digests_of)
    assert (plan.departed, plan.changed, plan.unchanged) == (950, 1, USERS - 951)
    assert sorted(k for part in asked for k in part) == sorted([*departed, changed])
    assert plan.adds.column("user_key").to_pylist() == [changed]
    assert plan.removals.num_rows == 951


def test_keyed_rows_cross_in_json_pages_on_postgres(snapshot):
    keys = ["a", "b'quote", 'c"dq', "d\\back", "e\nnew line", "f\u00e9\u4e2d", "g\ttab", "h"]
    rows = [(key, [2**63 - 1, -(2**63), None, 0][i % 4]) for i, key in enumerate(keys)]
    warehouse = snapshot.warehouse
    warehouse.execute(("DROP TABLE IF EXISTS review_keyed", ()))
    warehouse.execute(("CREATE TABLE review_keyed (owner TEXT, user_key TEXT PRIMARY KEY, fingerprint BIGINT)", ()))
    warehouse.execute_many("INSERT INTO review_keyed VALUES (%s, %s, %s)", [("7001", *r) for r in rows])
    schema = pa.schema([("user_key", pa.string()), ("fingerprint", pa.int64())])
    for page_rows in (3, 4, 100):
        table = warehouse.read_in_key_order("review_keyed", "owner = %s", ("7001",), schema, page_rows=page_rows)
        assert table.schema == schema and sorted(zip(*table.to_pydict().values(), strict=True)) == sorted(rows)
