"""Cut prepared users into request-ready batches of at most ``batch_size`` users, numbered from 1.

Numbering and content depend only on input order, so "batch 17" names the same users on a retry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_tiktok.audience.prepare import PreparedUsers
from airflow_provider_tiktok.limits import MAX_USERS_PER_MAPPING

MAX_BATCH_SIZE = MAX_USERS_PER_MAPPING


@dataclass(frozen=True)
class UserBatch:
    """``columns[i][row]`` is the digest of ``id_schema[i]`` for that user, or null when missing."""

    number: int
    id_schema: tuple[str, ...]
    columns: tuple[pa.Array, ...]

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def to_bytes(self) -> bytes:
        """Arrow IPC of the digest columns: how a staged batch is kept in the ledger."""
        table = pa.table(dict(zip(self.id_schema, self.columns, strict=True)))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls, number: int, data: bytes) -> UserBatch:
        table = pa.ipc.open_stream(data).read_all().combine_chunks()
        return cls(
            number,
            tuple(table.column_names),
            tuple(c.chunk(0) if c.num_chunks else pa.array([], pa.string()) for c in table.columns),
        )

    def rows(self) -> list[tuple[str | None, ...]]:
        return list(zip(*(column.to_pylist() for column in self.columns), strict=True))

    def batch_data(self, audience_ids: Sequence[str]) -> list[list[dict[str, Any]]]:
        """The ``segment/mapping/`` payload as Python objects: one list per user, ``{}`` for a gap."""
        ids = list(audience_ids)
        return [[{"id": d, "audience_ids": ids} if d else {} for d in row] for row in self.rows()]

    def batch_data_json(self, audience_ids: Sequence[str]) -> bytes:
        """Same payload as ``batch_data``, serialised by Arrow kernels instead of 30k Python dicts.

        Digests are validated lowercase hex, so no JSON escaping is needed.
        """
        cell_end = '","audience_ids":' + json.dumps([str(a) for a in audience_ids]) + "}"
        cells = [
            pc.fill_null(pc.binary_join_element_wise('{"id":"', column, cell_end, ""), "{}") for column in self.columns
        ]
        separators = [","] * (len(cells) - 1)
        parts = [p for pair in zip(cells, [*separators, "],"], strict=True) for p in pair]
        rows = pc.binary_join_element_wise("[", *parts, "")
        offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)
        first, last = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
        return b"[" + rows.buffers()[2].to_pybytes()[first : last - 1] + b"]"


def validate_batch_size(batch_size: int) -> int:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE} (TikTok's limit), got {batch_size}")
    return batch_size


def iter_batches(
    prepared: Iterable[PreparedUsers], id_schema: Sequence[str], batch_size: int = MAX_BATCH_SIZE
) -> Iterator[UserBatch]:
    validate_batch_size(batch_size)
    schema = tuple(id_schema)
    pending: list[list[pa.Array]] = [[] for _ in schema]
    pending_rows = 0
    number = 0
    for users in prepared:
        if not len(users):
            continue
        for column, digests in zip(pending, users.digests, strict=True):
            column.append(digests)
        pending_rows += len(users)
        if pending_rows < batch_size:
            continue
        columns = [pa.concat_arrays(pieces) for pieces in pending]
        start = 0
        while pending_rows - start >= batch_size:
            number += 1
            yield UserBatch(number, schema, tuple(c.slice(start, batch_size) for c in columns))
            start += batch_size
        pending = [[c.slice(start)] for c in columns]
        pending_rows -= start
    if pending_rows:
        yield UserBatch(number + 1, schema, tuple(pa.concat_arrays(pieces) for pieces in pending))
