"""Mirror mode: keep the members a sync manages equal to its query's valid users.

A membership snapshot per (advertiser, audience) holds, per user key, the binary digests we sent. Each run
diffs the query's users against it: new users are added, departed users removed with the digests sent for
them, users whose identifiers changed have their new digests added and the old ones removed, unchanged
users cost nothing. A digest still carried by any current user is never removed, so two users sharing a
phone never remove each other. The snapshot advances only with acknowledged batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_tiktok.audience import MatchField, UserBatch
from airflow_provider_tiktok.audience.batching import hex_payload, hex_strings
from airflow_provider_tiktok.audience.prepare import PreparedUsers
from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.warehouse import BLOB, TableSpec, Warehouse, check_identifier

FIELDS = tuple(f.value for f in MatchField)
SNAPSHOT = TableSpec(
    {
        "advertiser_id": "TEXT NOT NULL",
        "audience_id": "TEXT NOT NULL",
        "user_key": "TEXT NOT NULL",
        **{name: BLOB for name in FIELDS},
    },
    ("advertiser_id", "audience_id", "user_key"),
)


class RemovalRefused(TikTokConfigurationError):
    """A mirror run would remove too much; nothing was sent."""


@dataclass(frozen=True)
class MirrorPlan:
    """What a mirror run will send: ``adds`` and ``removals`` are tables of user_key + one binary column per field."""

    adds: pa.Table
    removals: pa.Table
    covered: pa.Array  # departed users whose every identifier a current user still carries: nothing to send
    departed: int
    changed: int
    unchanged: int
    audience_before: int

    @property
    def audience_after(self) -> int:
        return self.audience_before - self.departed + (self.adds.num_rows - self.changed)

    def describe(self) -> str:
        return (
            f"mirror plan: add {self.adds.num_rows - self.changed} new and {self.changed} changed users, remove "
            f"{self.departed} departed users, {self.unchanged} unchanged; audience {self.audience_before} -> "
            f"{self.audience_after} users"
        )

    def check_removals(self, max_removal_fraction: float, min_audience_size: int) -> None:
        """Refuse before anything is sent when the plan would gut the audience (e.g. an empty query)."""
        if not self.departed:
            return
        fraction = self.departed / max(self.audience_before, 1)
        if fraction > max_removal_fraction:
            raise RemovalRefused(
                f"Refusing the {self.describe()}: it removes {fraction:.0%} of the audience, more than "
                f"max_removal_fraction={max_removal_fraction:.0%}. Check the query; set allow_large_removal=True "
                "if this is intended."
            )
        if self.audience_after < min_audience_size:
            raise RemovalRefused(
                f"Refusing the {self.describe()}: it would leave {self.audience_after} users, fewer than "
                f"min_audience_size={min_audience_size} (TikTok needs about 1,000 to serve an ad group). "
                "Set allow_large_removal=True if this is intended."
            )

    def batches(self, id_schema: Sequence[str], fields: Sequence[str], batch_size: int) -> Iterator[UserBatch]:
        """Removals first, then adds, numbered from 1; digests as hex, as the request wants them."""
        number = 0
        for action, table in (("remove", self.removals), ("add", self.adds)):
            for start in range(0, table.num_rows, batch_size):
                part = table.slice(start, batch_size)
                number += 1
                columns = tuple(hex_digests(part.column(name).combine_chunks()) for name in fields)
                yield UserBatch(number, tuple(id_schema), columns, action, part.column("user_key").combine_chunks())


@dataclass(frozen=True)
class MirrorSettings:
    """Where a mirror sync keeps its snapshot, and how much it may remove in one run."""

    snapshot_table: str
    max_removal_fraction: float = 0.5
    min_audience_size: int = 1000
    allow_large_removal: bool = False

    def __post_init__(self) -> None:
        check_identifier(self.snapshot_table, "snapshot_table")
        if not 0 < self.max_removal_fraction <= 1:
            raise TikTokConfigurationError(f"max_removal_fraction must be in (0, 1], got {self.max_removal_fraction}.")

    def snapshot(self, warehouse: Warehouse, advertiser_id: str, audience_id: str | None) -> Snapshot:
        return Snapshot(warehouse, self.snapshot_table, advertiser_id, audience_id)

    def check(self, plan: MirrorPlan) -> None:
        if not self.allow_large_removal:
            plan.check_removals(self.max_removal_fraction, self.min_audience_size)


def current_members(prepared: Iterator[PreparedUsers], fields: Sequence[str]) -> pa.Table:
    """The query's usable users as user_key + binary digests, all chunks at once (a diff needs the whole set)."""
    tables = [
        pa.table(
            {"user_key": users.user_keys, **{f: binary_digests(d) for f, d in zip(fields, users.digests, strict=True)}}
        )
        for users in prepared
        if len(users)
    ]
    schema = pa.schema([("user_key", pa.string()), *((f, pa.binary()) for f in fields)])
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def plan_mirror(current: pa.Table, snapshot: pa.Table, fields: Sequence[str]) -> MirrorPlan:
    """Diff the query's users against the snapshot by user key (both: user_key + binary columns ``fields``)."""
    joined = current.append_column("in_new", pa.array(np.ones(current.num_rows, bool))).join(
        snapshot.append_column("in_old", pa.array(np.ones(snapshot.num_rows, bool))),
        keys="user_key",
        join_type="full outer",
        left_suffix="",
        right_suffix="_old",
        coalesce_keys=True,
    )
    in_new = pc.fill_null(joined.column("in_new"), False)
    in_old = pc.fill_null(joined.column("in_old"), False)
    changed_any = pa.array(np.zeros(joined.num_rows, bool))
    for name in fields:
        new, old = joined.column(name), joined.column(f"{name}_old")
        differs = pc.or_(pc.not_equal(new.is_valid(), old.is_valid()), pc.fill_null(pc.not_equal(new, old), False))
        changed_any = pc.or_(changed_any, differs)
    both = pc.and_(in_new, in_old)
    changed = pc.and_(both, changed_any)
    departed = pc.and_(in_old, pc.invert(in_new))
    adds = joined.filter(pc.or_(pc.and_(in_new, pc.invert(in_old)), changed)).select(["user_key", *fields])
    # Old digests leave, unless a current user still carries them.
    leaving = joined.filter(pc.or_(departed, changed))
    kept = {name: current.column(name).combine_chunks().drop_null() for name in fields}
    removal_columns = {
        name: pc.if_else(
            pc.is_in(leaving.column(f"{name}_old"), value_set=kept[name]), None, leaving.column(f"{name}_old")
        )
        for name in fields
    }
    keys = pc.if_else(pc.fill_null(leaving.column("in_new"), False), None, leaving.column("user_key"))
    removals = pa.table({"user_key": keys, **removal_columns})
    has_digest = pa.array(np.zeros(removals.num_rows, bool))
    for name in fields:
        has_digest = pc.or_(has_digest, removals.column(name).is_valid())
    return MirrorPlan(
        adds=adds,
        removals=removals.filter(has_digest),
        covered=removals.filter(pc.invert(has_digest)).column("user_key").combine_chunks().drop_null(),
        departed=pc.sum(departed).as_py() or 0,
        changed=pc.sum(changed).as_py() or 0,
        unchanged=(pc.sum(both).as_py() or 0) - (pc.sum(changed).as_py() or 0),
        audience_before=snapshot.num_rows,
    )


class Snapshot:
    """The members one sync manages in one audience, as sent: one row per user key, binary digests only."""

    def __init__(self, warehouse: Warehouse, table: str, advertiser_id: str, audience_id: str | None) -> None:
        self.warehouse, self.table, self.advertiser_id, self.audience_id = warehouse, table, advertiser_id, audience_id
        self._where = f"advertiser_id = {warehouse.placeholder} AND audience_id = {warehouse.placeholder}"

    def ensure(self) -> None:
        self.warehouse.ensure_table(self.table, SNAPSHOT, "snapshot_table")

    def load(self, fields: Sequence[str]) -> pa.Table:
        schema = pa.schema([("user_key", pa.string()), *((f, pa.binary()) for f in fields)])
        if self.audience_id is None:
            return schema.empty_table()
        rows = self.warehouse.query(
            f"SELECT user_key, {', '.join(fields)} FROM {self.table} WHERE {self._where}",
            (self.advertiser_id, self.audience_id),
        )
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
        return pa.table(
            [pa.array(list(values), type=kind) for values, kind in zip(columns, schema.types, strict=True)],
            schema=schema,
        )

    def apply(self, batch: UserBatch, fields: Sequence[str]) -> None:
        """An acknowledged batch moves the snapshot: adds record what was sent, removals forget departed users."""
        if batch.user_keys is None:
            return
        keys = batch.user_keys.to_pylist()
        if batch.action == "remove":
            sql = f"DELETE FROM {self.table} WHERE {self._where} AND user_key = {self.warehouse.placeholder}"
            self.warehouse.execute_many(sql, ((self.advertiser_id, self.audience_id, k) for k in keys if k is not None))
            return
        digests = [binary_digests(column).to_pylist() for column in batch.columns]
        names = ["advertiser_id", "audience_id", "user_key", *fields]
        updates = ", ".join(f"{f} = excluded.{f}" for f in fields)
        sql = (
            f"INSERT INTO {self.table} ({', '.join(names)}) VALUES ({self.warehouse.placeholders(len(names))}) "
            f"ON CONFLICT (advertiser_id, audience_id, user_key) DO UPDATE SET {updates}"
        )
        rows = (
            (self.advertiser_id, self.audience_id, key, *values) for key, *values in zip(keys, *digests, strict=True)
        )
        self.warehouse.execute_many(sql, rows)

    def forget(self, user_keys: pa.Array) -> None:
        """Departed users with nothing to remove from TikTok leave the snapshot at once."""
        sql = f"DELETE FROM {self.table} WHERE {self._where} AND user_key = {self.warehouse.placeholder}"
        target = (self.advertiser_id, self.audience_id)
        self.warehouse.execute_many(sql, ((*target, key) for key in user_keys.to_pylist()))


def binary_digests(column: pa.Array) -> pa.Array:
    """Lowercase hex digests as raw bytes (half the size), nulls kept; vectorised, no per-value Python."""
    present = column.is_valid().to_numpy(zero_copy_only=False)
    raw = hex_payload(column.drop_null())
    if not raw:
        return pa.nulls(len(column), pa.binary())
    count = int(present.sum())
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(len(raw) // count), count, [None, pa.py_buffer(raw)])
    positions = np.cumsum(present) - 1
    return fixed.take(pa.array(positions, mask=~present)).cast(pa.binary())


def hex_digests(column: pa.Array) -> pa.Array:
    """Binary digests back to the lowercase hex a request carries."""
    present = column.is_valid().to_numpy(zero_copy_only=False)
    valid = column.drop_null()
    if not len(valid):
        return pa.nulls(len(column), pa.string())
    offsets = np.frombuffer(valid.buffers()[1], dtype=np.int32)[valid.offset : valid.offset + len(valid) + 1]
    raw = valid.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])]
    bitmap = np.packbits(present, bitorder="little").tobytes()
    return hex_strings(raw, present, len(raw) // len(valid), bitmap)
