"""Mirror runs in rounds against a model audience: after every run the audience holds exactly the current users'
digests, whatever changed, departed, shared or lost an identifier (real SQLite snapshot, fingerprints and all)."""

from __future__ import annotations

import hashlib
import itertools
import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_tiktok.sync.mirror import Snapshot, fingerprints, plan_mirror
from airflow_provider_tiktok.warehouse import Warehouse

FIELDS = ["email", "phone"]
SCHEMA = ("EMAIL_SHA256", "PHONE_SHA256")
_audiences = itertools.count()


def digest(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text else None


identifier = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"]))  # a small pool: users share digests
user = st.tuples(identifier, identifier).filter(lambda ids: any(ids))
population = st.dictionaries(st.sampled_from([f"u{i}" for i in range(8)]), user, max_size=8)


def members(rows: dict[str, tuple[str | None, str | None]]) -> pa.Table:
    """The query's users as prepared: hex digests and their fingerprint."""
    keys = list(rows)
    table = pa.table(
        {
            "user_key": pa.array(keys, pa.string()),
            "email": pa.array([digest(f"e-{rows[k][0]}" if rows[k][0] else None) for k in keys], pa.string()),
            "phone": pa.array([digest(f"p-{rows[k][1]}" if rows[k][1] else None) for k in keys], pa.string()),
        }
    )
    return table.append_column("fingerprint", fingerprints(table, FIELDS))


def digests_held(table: pa.Table) -> set[tuple[str, str]]:
    return {(name, value) for name in FIELDS for value in table.column(name).to_pylist() if value is not None}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("mirror") / "w.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
        yield Warehouse("warehouse")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(population, min_size=1, max_size=4))
def test_after_each_run_the_audience_holds_exactly_the_current_users_digests(warehouse, rounds):
    snapshot = Snapshot(warehouse, "snapshot", "7000000000001", f"audience-{next(_audiences)}")
    snapshot.ensure()
    audience: set[tuple[str, str]] = set()  # what TikTok holds: only what the sync sent
    before: set[str] = set()
    for rows in rounds:
        current = members(rows)
        plan = plan_mirror(current, snapshot.fingerprints(), FIELDS, lambda keys: snapshot.digests_of(keys, FIELDS))
        new = len(set(rows) - before)
        assert plan.departed == len(before - set(rows))
        assert plan.changed + plan.unchanged + new == len(rows)
        snapshot.forget(plan.covered)
        for batch in plan.batches(SCHEMA, FIELDS, 3):
            sent = digests_held(pa.table(dict(zip(FIELDS, batch.columns, strict=True))))
            audience = audience | sent if batch.action == "add" else audience - sent
            snapshot.apply(batch, FIELDS)  # acknowledged
        assert audience == digests_held(current)
        assert sorted(snapshot.fingerprints().column("user_key").to_pylist()) == sorted(rows)
        before = set(rows)
