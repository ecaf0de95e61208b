"""Turn a stream of warehouse chunks into de-duplicated, hashed users, counting every outcome.

``prepare_chunk`` is stateless, so worker threads can run it side by side (its Arrow and DataFusion
kernels release the GIL). ``UserPreparer`` keeps what must be seen in order: which users and
identities were already taken, and the counters.

A user that is not synced has exactly one reason, counted in ``PreparationCounts.not_synced`` and listed,
per chunk, in ``PreparedUsers.rejects`` (``REJECTS_SCHEMA``: ``user_key``, ``reason``, ``field``):

- ``missing_user_key``: the user key cell is null (NaN/None); ``user_key`` and ``field`` are null;
- ``missing_fields``: no chosen match field has a value (null, empty or blank); ``field`` is null;
- ``invalid_email`` / ``invalid_phone`` / ``invalid_device_id``: values are present but none is usable;
  the reason and ``field`` name the first invalid field in ``id_schema`` order (``idfa`` or ``gaid`` for
  device ids); rules per field are in ``identifiers`` and ``phones``;
- ``duplicate``: a user key, or the exact same set of digests, was already taken earlier in the run;
  ``field`` is null.

``user_key`` is the key as canonical text (``key_text``): never a raw or hashed identifier.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_tiktok.audience.identifiers import (
    FIELD_ORDER,
    FieldRules,
    MatchField,
    digest_fingerprints,
    digest_heads,
    hash_array,
    id_schema_for,
    integral_floats,
    key_text,
    prepare_field,
)
from airflow_provider_tiktok.audience.keyset import CompactKeySet
from airflow_provider_tiktok.exceptions import TikTokConfigurationError

MISSING_FIELDS = "missing_fields"
MISSING_USER_KEY = "missing_user_key"
DUPLICATE = "duplicate"
REJECTS_SCHEMA = pa.schema([("user_key", pa.string()), ("reason", pa.string()), ("field", pa.string())])


@dataclass(frozen=True)
class PrepareOptions:
    """Which source columns feed which match fields, and how each field is read."""

    match_fields: Mapping[str, str]
    user_key_column: str
    rules: FieldRules = field(default_factory=FieldRules)

    def __post_init__(self) -> None:
        if not self.match_fields:
            raise TikTokConfigurationError("match_fields is empty: choose at least one of email, phone, idfa, gaid.")
        unknown = sorted(set(self.match_fields) - {f.value for f in MatchField})
        if unknown:
            raise TikTokConfigurationError(
                f"match_fields has unknown field(s) {unknown}; use email, phone, idfa or gaid."
            )
        if not self.user_key_column:
            raise TikTokConfigurationError("user_key_column is required (it de-duplicates users).")

    @property
    def fields(self) -> tuple[MatchField, ...]:
        return tuple(f for f in FIELD_ORDER if f.value in self.match_fields)

    @property
    def id_schema(self) -> tuple[str, ...]:
        return tuple(id_schema_for(f, self.rules.device_id_hash) for f in self.fields)

    @property
    def source_columns(self) -> list[str]:
        columns = [self.user_key_column, *(self.match_fields[f.value] for f in self.fields)]
        if self.phone_country_column and self.phone_country_column not in columns:
            columns.append(self.phone_country_column)
        return columns

    @property
    def phone_country_column(self) -> str | None:
        """Read only when phones are matched on."""
        return self.rules.phone_country_column if MatchField.PHONE in self.fields else None

    def check_columns(self, columns: Iterable[str]) -> None:
        """Name every configured column the source lacks, before anything is read or sent."""
        available = set(columns)
        missing = [c for c in self.source_columns if c not in available]
        if missing:
            raise TikTokConfigurationError(
                f"Source has no column(s) {missing}; it has {sorted(available)}. "
                "Fix user_key_column / match_fields or the query."
            )


@dataclass
class ChunkResult:
    """One chunk, prepared: digests of its usable rows, and counts and ``rejects`` of the rest.

    ``usable_keys`` is the user key column of the usable rows, for naming duplicates found later.
    """

    rows: int
    user_keys: np.ndarray
    fingerprints: np.ndarray  # of each usable row's digests: its identity
    digests: list[pa.Array]
    not_synced: Counter[str]
    invalid_by_field: Counter[str]
    rejects: pa.Table
    usable_keys: pd.Series


@dataclass
class PreparedUsers:
    """Usable, de-duplicated users of one chunk: ``digests[i]`` aligns with ``id_schema[i]``.

    ``rejects`` lists the chunk's users that are not synced, one row each (``REJECTS_SCHEMA``, module docstring).
    """

    digests: list[pa.Array]
    fingerprints: np.ndarray  # of each user's digests (``digest_fingerprints``): the identity
    rejects: pa.Table = field(default_factory=REJECTS_SCHEMA.empty_table)
    keys: pd.Series | None = None  # the user key cells, as read
    entered_at: pa.Array | None = None  # epoch seconds each user entered, when the sync measures freshness

    def __len__(self) -> int:
        return len(self.digests[0]) if self.digests else 0

    @property
    def user_keys(self) -> pa.Array:
        """The users' keys as canonical text (what a mirror snapshot is keyed by), computed when asked."""
        return key_text(self.keys) if self.keys is not None else pa.nulls(len(self), pa.string())


@dataclass
class PreparationCounts:
    """``coverage[f]``: how many prepared users carry a usable ``f`` (every match field named, 0 if unused)."""

    entered: int = 0
    prepared: int = 0
    not_synced: Counter[str] = field(default_factory=Counter)
    invalid_by_field: Counter[str] = field(default_factory=Counter)
    coverage: dict[str, int] = field(default_factory=lambda: {f.value: 0 for f in FIELD_ORDER})

    @property
    def duplicates(self) -> int:
        return self.not_synced[DUPLICATE]


def prepare_chunk(frame: pd.DataFrame, options: PrepareOptions) -> ChunkResult:
    options.check_columns(frame.columns)
    rows = len(frame)
    countries = frame[options.phone_country_column] if options.phone_country_column else None
    outcomes = [
        prepare_field(frame[options.match_fields[f.value]], f, options.rules, countries) for f in options.fields
    ]
    invalid_by_field: Counter[str] = Counter()
    any_valid = np.zeros(rows, dtype=bool)
    reasons = np.full(rows, MISSING_FIELDS, dtype=object)
    fields = np.full(rows, None, dtype=object)
    first_invalid = np.zeros(rows, dtype=bool)
    for match_field, outcome in zip(options.fields, outcomes, strict=True):
        invalid = outcome.present & ~outcome.valid
        if invalid.any():
            invalid_by_field[match_field.value] += int(invalid.sum())
        reasons[invalid & ~first_invalid] = match_field.invalid_reason
        fields[invalid & ~first_invalid] = match_field.value
        first_invalid |= invalid
        any_valid |= outcome.valid
    key_column = frame[options.user_key_column]
    has_key = key_column.notna().to_numpy()
    reasons[~has_key] = MISSING_USER_KEY
    fields[~has_key] = None
    usable = any_valid & has_key
    not_synced = Counter(reasons[~usable].tolist())
    digests = [outcome.digests.filter(pa.array(usable)) for outcome in outcomes]
    usable_keys = key_column[usable]
    rejects = pa.table(
        [
            key_text(key_column[~usable]),
            pa.array(reasons[~usable], pa.string()),
            pa.array(fields[~usable], pa.string()),
        ],
        schema=REJECTS_SCHEMA,
    )
    return ChunkResult(
        rows=rows,
        user_keys=user_key_hashes(usable_keys),
        fingerprints=digest_fingerprints({f.value: d for f, d in zip(options.fields, digests, strict=True)}),
        digests=digests,
        not_synced=not_synced,
        invalid_by_field=invalid_by_field,
        rejects=rejects,
        usable_keys=usable_keys,
    )


def user_key_hashes(keys: pd.Series) -> np.ndarray:
    """Deterministic 64-bit hashes of non-null user keys, the same in every process.

    Keys with the same ``key_text`` hash the same whatever type a chunk read them as, so an int column read
    as float in a chunk with a NULL still names the same users: integers below 10**18 in magnitude (1, 1.0,
    ``Decimal(1)``, ``np.int64(1)``, and the text "1") hash as their int64 (pandas' fixed-key SipHash),
    anything else as the head of its text's SHA-256 (hashed in Rust, never made into Python strings).
    """
    integral, numbers = _integral_keys(keys)
    hashes = np.empty(len(keys), dtype=np.uint64)
    hashes[integral] = pd.util.hash_array(numbers[integral])
    if not integral.all():
        hashes[~integral] = digest_heads(hash_array(key_text(keys[~integral]), "sha256"))
    return hashes


_INTEGER_TEXT = r"^-?(0|[1-9][0-9]{0,17})$"  # the canonical text of an integer below 10**18 in magnitude
_INTEGER_LIMIT = 10**18


def _integral_keys(keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which keys are integers below ``_INTEGER_LIMIT`` in magnitude, and their values (0 elsewhere)."""
    if pd.api.types.is_unsigned_integer_dtype(keys.dtype):
        values = keys.to_numpy(dtype=np.uint64)
        integral = values < _INTEGER_LIMIT
        return integral, np.where(integral, values, 0).astype(np.int64)
    if pd.api.types.is_integer_dtype(keys.dtype):
        values = keys.to_numpy(dtype=np.int64)
        return np.abs(values) < _INTEGER_LIMIT, values
    if pd.api.types.is_float_dtype(keys.dtype):
        values = keys.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = integral_floats(values, _INTEGER_LIMIT)
        return integral, np.where(integral, values, 0).astype(np.int64)
    text = key_text(keys)
    integral = pc.fill_null(pc.match_substring_regex(text, _INTEGER_TEXT), False)
    numbers = pc.cast(pc.if_else(integral, text, "0"), pa.int64())
    return integral.to_numpy(zero_copy_only=False), numbers.to_numpy(zero_copy_only=False)


class UserPreparer:
    """Streams chunks through preparation and de-duplication, keeping exact counts as it goes."""

    def __init__(self, options: PrepareOptions) -> None:
        self.options = options
        self.counts = PreparationCounts()
        self._seen_users = CompactKeySet()
        self._seen_identities = CompactKeySet()

    def prepare(self, frames: Iterable[pd.DataFrame], *, workers: int = 1) -> Iterator[PreparedUsers]:
        """Yield usable users chunk by chunk, in input order (deterministic for a given order).

        Each ``PreparedUsers`` also carries ``rejects``: that chunk's users not synced, one row each, ready
        to append in bulk to a rejects table. ``workers > 1`` prepares that many chunks at once on threads,
        to use more than one core.
        """
        for result in map_chunks(frames, self.options, workers):
            yield self._deduplicate(result)

    def _deduplicate(self, result: ChunkResult) -> PreparedUsers:
        counts = self.counts
        counts.entered += result.rows
        counts.not_synced.update(result.not_synced)
        counts.invalid_by_field.update(result.invalid_by_field)
        user_keys, identities = result.user_keys, result.fingerprints
        duplicate = pd.Series(user_keys).duplicated().to_numpy() | pd.Series(identities).duplicated().to_numpy()
        duplicate |= self._seen_users.contains(user_keys) | self._seen_identities.contains(identities)
        keep = ~duplicate
        self._seen_users.add(user_keys[keep])
        self._seen_identities.add(identities[keep])
        kept = int(keep.sum())
        counts.prepared += kept
        rejects = result.rejects
        if kept < len(keep):
            counts.not_synced[DUPLICATE] += len(keep) - kept
            duplicates = key_text(result.usable_keys[duplicate])
            reasons = pa.array([DUPLICATE] * len(duplicates), pa.string())
            rejects = pa.concat_tables(
                [
                    rejects,
                    pa.table([duplicates, reasons, pa.nulls(len(duplicates), pa.string())], schema=REJECTS_SCHEMA),
                ]
            )
        mask = pa.array(keep)
        digests = [column.filter(mask) for column in result.digests]
        for match_field, column in zip(self.options.fields, digests, strict=True):
            counts.coverage[match_field.value] += len(column) - column.null_count
        return PreparedUsers(digests, identities[keep], rejects, result.usable_keys[keep])


def map_chunks(frames: Iterable[pd.DataFrame], options: PrepareOptions, workers: int) -> Iterator[ChunkResult]:
    """``prepare_chunk`` over the frames, in order; with ``workers > 1`` on a bounded thread pool.

    Threads, not processes: the work is in GIL-free kernels, and a process pool would spend as long
    pickling digests back as it saves.
    """
    if workers <= 1:
        for frame in frames:
            yield prepare_chunk(frame, options)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
        yield from _bounded_ordered_map(pool, frames, options, in_flight=2 * workers)


def _bounded_ordered_map(
    pool: Executor, frames: Iterable[pd.DataFrame], options: PrepareOptions, in_flight: int
) -> Iterator[ChunkResult]:
    # Executor.map would submit every chunk at once and hold the whole input in memory. A result leaves as
    # soon as it is ready, not once ``in_flight`` chunks have been read: the first batch goes out early.
    pending: deque[Future[ChunkResult]] = deque()
    for frame in frames:
        pending.append(pool.submit(prepare_chunk, frame, options))
        while pending and (pending[0].done() or len(pending) >= in_flight):
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
