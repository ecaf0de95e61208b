"""Mirror plans: adds, removals, identity changes and the removal guard, on small exact tables."""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from airflow_provider_tiktok.audience import PrepareOptions, UserPreparer
from airflow_provider_tiktok.sync.mirror import (
    MirrorPlan,
    RemovalRefused,
    binary_digests,
    current_members,
    fingerprints,
    hex_digests,
    plan_mirror,
)

FIELDS = ["email", "phone"]


def d(text: str | None) -> bytes | None:
    return hashlib.sha256(text.encode()).digest() if text else None


def h(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def members(rows: dict[str, tuple[str | None, str | None]]) -> pa.Table:
    """Users with their digests as bytes, as the snapshot stores them."""
    keys = list(rows)
    return pa.table(
        {
            "user_key": pa.array(keys, pa.string()),
            "email": pa.array([d(rows[k][0]) for k in keys], pa.binary()),
            "phone": pa.array([d(rows[k][1]) for k in keys], pa.binary()),
        }
    )


def plan_mirror_against(current: pa.Table, snapshot: pa.Table) -> MirrorPlan:
    """The plan, with the snapshot read as the warehouse would: fingerprints of all, digests of the leaving only;
    the query's users in hex, as prepared."""
    query = pa.table({"user_key": current["user_key"], **{f: hex_digests(current[f].combine_chunks()) for f in FIELDS}})
    query = query.append_column("fingerprint", fingerprints(query, FIELDS))
    previous = pa.table({"user_key": snapshot.column("user_key"), "fingerprint": fingerprints(snapshot, FIELDS)})
    asked: list[set[str]] = []

    def digests_of(keys: pa.Array) -> pa.Table:
        asked.append(set(keys.to_pylist()))
        return snapshot.filter(pc.is_in(snapshot.column("user_key"), value_set=keys))

    plan = plan_mirror(query, previous, FIELDS, digests_of)
    unchanged_keys = set(snapshot.column("user_key").to_pylist()) - set().union(*asked)
    assert len(unchanged_keys) == plan.unchanged  # unchanged users' digests are never read back
    return plan


def rows_of(table: pa.Table) -> set[tuple]:
    return set(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def test_new_departed_changed_and_unchanged_users_each_get_their_plan():
    snapshot = members({"1": ("a@x", "+1"), "2": ("b@x", None), "3": ("c@x", "+3"), "4": ("d@x", None)})
    current = members({"1": ("a@x", "+1"), "3": ("c@x", "+33"), "4": ("dd@x", None), "5": ("e@x", "+5")})
    plan = plan_mirror_against(current, snapshot)
    assert (plan.departed, plan.changed, plan.unchanged, plan.audience_before) == (1, 2, 1, 4)
    assert rows_of(plan.adds) == {("3", h("c@x"), h("+33")), ("4", h("dd@x"), None), ("5", h("e@x"), h("+5"))}
    # Departed user 2 leaves with what was sent for them; changed users lose only their old identifiers,
    # and no snapshot row follows those (the add records the new ones).
    assert rows_of(plan.removals) == {("2", h("b@x"), None), (None, None, h("+3")), (None, h("d@x"), None)}
    assert plan.audience_after == 4


def test_a_digest_still_carried_by_a_current_user_is_never_removed():
    snapshot = members({"1": ("shared@x", "+1"), "2": ("shared@x", "+2")})
    current = members({"2": ("shared@x", "+2")})
    plan = plan_mirror_against(current, snapshot)
    assert rows_of(plan.removals) == {("1", None, h("+1"))}
    twin = plan_mirror_against(
        members({"2": ("shared@x", "+2")}), members({"1": ("shared@x", "+2"), "2": ("shared@x", "+2")})
    )
    assert twin.removals.num_rows == 0 and twin.covered.to_pylist() == ["1"]  # nothing to send; forgotten


def test_the_first_run_adds_everyone_and_a_rerun_sends_nothing():
    current = members({"1": ("a@x", None), "2": ("b@x", "+2")})
    first = plan_mirror_against(current, members({}))
    assert first.adds.num_rows == 2 and first.removals.num_rows == 0
    again = plan_mirror_against(current, current)
    assert (again.adds.num_rows, again.removals.num_rows, again.unchanged) == (0, 0, 2)


def test_an_empty_query_is_refused_by_the_removal_guard():
    snapshot = members({str(i): (f"{i}@x", None) for i in range(2000)})
    plan = plan_mirror_against(members({}), snapshot)
    with pytest.raises(RemovalRefused, match="removes 100% of the audience"):
        plan.check_removals(0.5, 1000)


def test_a_run_that_would_leave_too_few_users_is_refused_but_one_without_removals_is_not():
    snapshot = members({str(i): (f"{i}@x", None) for i in range(1100)})
    current = members({str(i): (f"{i}@x", None) for i in range(900)})
    with pytest.raises(RemovalRefused, match="leave 900 users, fewer than min_audience_size=1000"):
        plan_mirror_against(current, snapshot).check_removals(0.5, 1000)
    plan_mirror_against(current, members({})).check_removals(0.5, 1000)  # adds only: nothing to guard


def test_batches_remove_first_then_add_with_hex_digests_and_keys():
    snapshot = members({"1": ("a@x", None)})
    current = members({"2": ("b@x", "+2")})
    batches = list(plan_mirror_against(current, snapshot).batches(("EMAIL_SHA256", "PHONE_SHA256"), FIELDS, 10))
    assert [(b.number, b.action, b.user_keys.to_pylist()) for b in batches] == [(1, "remove", ["1"]), (2, "add", ["2"])]
    assert batches[1].rows() == [(hashlib.sha256(b"b@x").hexdigest(), hashlib.sha256(b"+2").hexdigest())]


def test_hex_and_binary_digests_convert_both_ways_with_nulls():
    hexes = pa.array([hashlib.md5(b"x").hexdigest(), None, hashlib.md5(b"y").hexdigest()])
    binary = binary_digests(hexes)
    assert binary.to_pylist() == [hashlib.md5(b"x").digest(), None, hashlib.md5(b"y").digest()]
    assert hex_digests(binary).to_pylist() == hexes.to_pylist()


def test_a_fingerprint_is_the_same_from_hex_digests_as_from_their_bytes():
    """The diff fingerprints the query's hex digests; the snapshot stored the fingerprints of their bytes."""
    stored = members({"1": ("a@x", "+1"), "2": (None, "+2"), "3": ("c@x", None)})
    as_hex = pa.table({f: hex_digests(stored[f].combine_chunks()) for f in FIELDS})
    upper = pa.table({f: pc.utf8_upper(as_hex[f]) for f in FIELDS})
    assert fingerprints(as_hex, FIELDS).to_pylist() == fingerprints(stored, FIELDS).to_pylist()
    assert fingerprints(upper, FIELDS).to_pylist() == fingerprints(stored, FIELDS).to_pylist()
    assert len(set(fingerprints(stored, FIELDS).to_pylist())) == 3


def test_prepared_users_carry_the_fingerprint_the_snapshot_computes_from_the_bytes_sent():
    """Computed by the prepare workers from hex, stored from bytes: were they to differ, every member would
    look changed and each run would send the whole audience again."""
    emails, phones = ["a@x.io", None, "c@x.io", "a@x.io"], [None, "+14155550100", "+14155550101", None]
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "email": emails, "phone": phones})
    options = PrepareOptions({"email": "email", "phone": "phone"}, "id")
    current = current_members(UserPreparer(options).prepare([frame]), FIELDS)
    assert current.column("user_key").to_pylist() == ["1", "2", "3"]  # 4 repeats 1's identity
    stored = pa.table({f: binary_digests(current.column(f).combine_chunks()) for f in FIELDS})
    assert current.column("fingerprint").to_pylist() == fingerprints(stored, FIELDS).to_pylist()
