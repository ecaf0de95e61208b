"""Cut prepared users into request-ready batches of at most ``batch_size`` users, numbered from 1.

Numbering and content depend only on input order, so "batch 17" names the same users on a retry.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_tiktok.audience.prepare import PreparedUsers
from airflow_provider_tiktok.limits import MAX_USERS_PER_MAPPING

MAX_BATCH_SIZE = MAX_USERS_PER_MAPPING


@dataclass(frozen=True)
class UserBatch:
    """``columns[i][row]`` is the digest of ``id_schema[i]`` for that user, or null when missing.

    A mirror sync's batches also say what they do (``action``: add or remove) and whose membership they
    change (``user_keys``; null for a changed user's old identifiers, which no snapshot row follows).
    """

    number: int
    id_schema: tuple[str, ...]
    columns: tuple[pa.Array, ...]
    action: str | None = None
    user_keys: pa.Array | None = None
    entered_at: pa.Array | None = None  # epoch seconds each user entered, when the sync measures freshness

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @property
    def counted_users(self) -> int:
        """Users this batch counts for: a mirror removal counts departed users, not changed users' old ids."""
        if self.action == "remove" and self.user_keys is not None:
            return len(self.user_keys) - self.user_keys.null_count
        return len(self)

    def to_bytes(self) -> bytes:
        """How a staged batch is kept in the ledger: binary digests of the present ids only, plus one
        presence bit per user and id (about 33 bytes per SHA-256 id instead of 64 hex characters)."""
        parts = [_MAGIC, struct.pack("<HI", len(self.id_schema), len(self))]
        for name, column in zip(self.id_schema, self.columns, strict=True):
            present = column.is_valid().to_numpy(zero_copy_only=False)
            digests = hex_payload(column.drop_null())
            width = len(digests) // max(int(present.sum()), 1)
            parts += [struct.pack("<B", len(name)), name.encode(), struct.pack("<B", width)]
            parts += [np.packbits(present, bitorder="little").tobytes(), digests]
        for marker, name, column in ((b"K", "user_key", self.user_keys), (b"E", "entered_at", self.entered_at)):
            if column is not None:
                section = _ipc(pa.table({name: column}))
                parts += [marker, struct.pack("<I", len(section)), section]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, number: int, data: bytes, action: str | None = None) -> UserBatch:
        if not data.startswith(_MAGIC):
            raise ValueError(f"batch {number} was not written by this version's to_bytes")
        view = memoryview(data)
        columns, rows = struct.unpack_from("<HI", view, len(_MAGIC))
        at = len(_MAGIC) + 6
        schema, arrays = [], []
        for _ in range(columns):
            name_length = view[at]
            schema.append(bytes(view[at + 1 : at + 1 + name_length]).decode())
            width = view[at + 1 + name_length]
            at += 2 + name_length
            bitmap = bytes(view[at : at + (rows + 7) // 8])
            present = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), count=rows, bitorder="little")
            at += len(bitmap)
            size = int(present.sum()) * width
            arrays.append(hex_strings(bytes(view[at : at + size]), present.astype(bool), width, bitmap))
            at += size
        sections: dict[bytes, pa.Array] = {}
        while at < len(view):
            marker = bytes(view[at : at + 1])
            (length,) = struct.unpack_from("<I", view, at + 1)
            sections[marker] = pa.ipc.open_stream(bytes(view[at + 5 : at + 5 + length])).read_all().column(0)
            sections[marker] = sections[marker].combine_chunks()
            at += 5 + length
        return cls(number, tuple(schema), tuple(arrays), action, sections.get(b"K"), sections.get(b"E"))

    def rows(self) -> list[tuple[str | None, ...]]:
        return list(zip(*(column.to_pylist() for column in self.columns), strict=True))

    def batch_data_json(self, audience_ids: Sequence[str]) -> bytes:
        """The ``segment/mapping/`` payload (one list per user, ``{}`` for a gap), serialised by Arrow kernels
        instead of 30k Python dicts.

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


_MAGIC = b"TTB1"


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def hex_payload(digests: pa.Array) -> bytes:
    """The concatenated lowercase-hex digests of a null-free string array, as raw bytes."""
    if not len(digests):
        return b""
    offsets = np.frombuffer(digests.buffers()[1], dtype=np.int32)[digests.offset : digests.offset + len(digests) + 1]
    text = digests.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])]
    return bytes.fromhex(text.decode("ascii"))


def hex_strings(raw: bytes, present: np.ndarray, width: int, bitmap: bytes) -> pa.Array:
    """Hex digests again, one per present row, null where the id was missing."""
    lengths = present.astype(np.int32) * (2 * width)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]).astype(np.int32)
    validity = pa.py_buffer(bitmap) if not present.all() else None
    return pa.StringArray.from_buffers(
        len(present), pa.py_buffer(offsets.tobytes()), pa.py_buffer(raw.hex().encode()), validity
    )


def validate_batch_size(batch_size: int) -> int:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE} (TikTok's limit), got {batch_size}")
    return batch_size


def iter_batches(
    prepared: Iterable[PreparedUsers], id_schema: Sequence[str], batch_size: int = MAX_BATCH_SIZE
) -> Iterator[UserBatch]:
    validate_batch_size(batch_size)
    schema = tuple(id_schema)
    # The digest columns, then when each user entered (all nulls unless the sync measures freshness).
    pending: list[list[pa.Array]] = [[] for _ in range(len(schema) + 1)]
    pending_rows = 0
    number = 0
    timed = False

    def batch(columns: list[pa.Array]) -> UserBatch:
        return UserBatch(number, schema, tuple(columns[:-1]), entered_at=columns[-1] if timed else None)

    for users in prepared:
        if not len(users):
            continue
        timed = users.entered_at is not None
        entered = users.entered_at if timed else pa.nulls(len(users), pa.float64())
        for column, values in zip(pending, [*users.digests, entered], strict=True):
            column.append(values)
        pending_rows += len(users)
        if pending_rows < batch_size:
            continue
        columns = [pa.concat_arrays(pieces) for pieces in pending]
        start = 0
        while pending_rows - start >= batch_size:
            number += 1
            yield batch([c.slice(start, batch_size) for c in columns])
            start += batch_size
        pending = [[c.slice(start)] for c in columns]
        pending_rows -= start
    if pending_rows:
        number += 1
        yield batch([pa.concat_arrays(pieces) for pieces in pending])
