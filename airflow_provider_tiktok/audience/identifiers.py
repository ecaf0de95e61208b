"""Normalise, validate and hash one match field for a whole chunk at once.

String work runs in Arrow's vectorised kernels and hashing in DataFusion's, so no step loops over values
in Python (bar the opt-in Gmail canonicalisation and cells of mixed-type columns). Rules (SPEC §2):

- every field: a cell is read as text (numbers as their digits: 6505550002.0 is ``6505550002``; bytes as
  UTF-8); format characters (Unicode Cf: zero-width space, BOM, soft hyphen, …) are dropped, compatibility
  forms NFKC-folded (fullwidth letters and digits) and whitespace trimmed. Null, NaN and blank cells are
  missing. Cells that cannot be one identifier (a list, dict, bool, non-integral number, bytes that are
  not UTF-8) are present and invalid — never an error;
- email: lower-cased; one ``local@domain.tld`` with a dot in the domain, at most 254 characters, and none of
  ``" ( ) , : ; < > [ \\ ]`` or whitespace (so no JSON arrays or lists of addresses); with
  ``normalize_gmail`` gmail.com/googlemail.com addresses lose dots and ``+tags`` and become gmail.com;
- phone: E.164 by ``phonenumbers``' rules for every region (see ``phones``), in the row's
  ``phone_country_column`` country else ``default_phone_country``;
- idfa/gaid: lower-cased UUID, not the all-zero id; SHA-256, or MD5 with ``device_id_hash="md5"``;
- with ``accept_hashed``, a whole hex digest of the field's algorithm passes through lower-cased.

A present value that fails its rule counts in ``invalid_by_field``; a user none of whose fields is usable is
not synced as ``invalid_email`` / ``invalid_phone`` / ``invalid_device_id`` (first invalid field in
``id_schema`` order) or ``missing_fields`` (see ``prepare``).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_tiktok.audience.phones import check_region, normalise_phones, region_positions
from airflow_provider_tiktok.exceptions import TikTokConfigurationError

if TYPE_CHECKING:
    from datafusion import SessionContext


class MatchField(str, Enum):
    EMAIL = "email"
    PHONE = "phone"
    IDFA = "idfa"
    GAID = "gaid"

    @property
    def is_device_id(self) -> bool:
        return self in (MatchField.IDFA, MatchField.GAID)

    @property
    def invalid_reason(self) -> str:
        return "invalid_device_id" if self.is_device_id else f"invalid_{self.value}"


#: Order of ``id_schema`` in every request, whatever order the user named the fields in.
FIELD_ORDER = (MatchField.EMAIL, MatchField.PHONE, MatchField.IDFA, MatchField.GAID)
DIGEST_LENGTH = {"sha256": 64, "md5": 32}
_SCHEMA_PREFIX = {
    MatchField.EMAIL: "EMAIL",
    MatchField.PHONE: "PHONE",
    MatchField.IDFA: "IDFA",
    MatchField.GAID: "AAID",
}

#: One address, dot in the domain; none of the characters that only a quoted or listed address has.
EMAIL_PATTERN = r"^[^@\s\"(),:;<>\[\\\]]+@[^@\s\"(),:;<>\[\\\]]+\.[^@\s\"(),:;<>\[\\\].]{2,}$"
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"  # "limit ad tracking": identifies nobody
#: Fails every validator, so a value we cannot read as text counts as invalid rather than missing.
UNREADABLE = "\x00"


_IDENTIFIER_LIKE = re.compile(
    r"[^\s@'\"()<>\[\],;:=]+@[^\s@'\"()<>\[\],;:=]+"  # an email
    r"|\+?\d[\d\s().\-/]{5,}\d"  # a phone number (7+ digits, maybe punctuated)
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # a device id
)


def scrub_identifiers(text: str) -> str:
    """Blank whatever looks like an email, phone number or device id, e.g. a value a database
    echoed in its error message, before the text reaches a log or an exception."""
    return _IDENTIFIER_LIKE.sub("[redacted]", text)


def id_schema_for(field: MatchField, device_id_hash: str = "sha256") -> str:
    algorithm = device_id_hash if field.is_device_id else "sha256"
    return f"{_SCHEMA_PREFIX[field]}_{algorithm.upper()}"


@dataclass(frozen=True)
class FieldRules:
    """Options that change how one field is read."""

    default_phone_country: str | None = None
    device_id_hash: str = "sha256"
    accept_hashed: bool = False
    normalize_gmail: bool = False
    #: Source column with each user's ISO 3166 alpha-2 country, for their national phone numbers; a null or
    #: blank cell falls back to ``default_phone_country``, a code nobody knows makes the phone invalid.
    phone_country_column: str | None = None

    def __post_init__(self) -> None:
        if self.device_id_hash not in DIGEST_LENGTH:
            raise TikTokConfigurationError(f"device_id_hash must be 'sha256' or 'md5', not {self.device_id_hash!r}.")
        check_region(self.default_phone_country)

    def algorithm(self, field: MatchField) -> str:
        return self.device_id_hash if field.is_device_id else "sha256"


@dataclass(frozen=True)
class FieldOutcome:
    """Per row of a chunk: a digest (null when unusable), and whether the value was present / valid."""

    digests: pa.Array
    present: np.ndarray
    valid: np.ndarray


def as_text(values: pd.Series) -> pa.Array:
    """Warehouse values as Arrow strings, one identifier per cell.

    Numbers become digit strings (a phone read as the float 1.6577770000e10 is ``16577770000``); missing and
    blank cells become null; invisible format characters (zero-width space, BOM, …) are dropped and
    compatibility forms (fullwidth letters) folded. A cell that cannot be one identifier — 12.5, a bool, a
    list, bytes that are not UTF-8 — becomes ``UNREADABLE``, which every validator refuses.
    """
    array = _cells_as_text(values, key=False)
    array = _fold_unicode(array)
    array = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(pc.utf8_length(array), 0), pa.scalar(None, pa.string()), array)


def key_text(values: pd.Series) -> pa.Array:
    """User keys as canonical text, the same whatever type a chunk read them as: 1, 1.0, Decimal("1") and
    "1" are all ``"1"``. Nulls stay null; other values keep their text form, untrimmed."""
    return _cells_as_text(values, key=True)


def _cells_as_text(values: pd.Series, key: bool) -> pa.Array:
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) and not key:
        text = pd.Series(UNREADABLE, index=values.index, dtype=object).where(values.notna(), None)
    elif pd.api.types.is_float_dtype(dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = integral_floats(numbers)
        digits = pc.cast(pa.array(np.where(integral, numbers, 0).astype(np.int64)), pa.string())
        other = pc.cast(pa.array(numbers, from_pandas=True), pa.string()) if key else pa.scalar(UNREADABLE)
        text = pc.if_else(pa.array(integral), digits, other)
        return pc.if_else(pa.array(np.isnan(numbers)), pa.scalar(None, pa.string()), text)
    elif pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        text = values.astype("string")
    elif isinstance(dtype, pd.StringDtype):
        text = values
    else:
        cells = values.to_numpy(dtype=object)
        try:  # the usual case: text and missing values only, converted in C
            return pa.array(cells, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([_cell_text(cell, key) for cell in cells], type=pa.string())
    return pa.array(text.array, type=pa.string(), from_pandas=True)


def integral_floats(numbers: np.ndarray, limit: float = 2.0**63) -> np.ndarray:
    """Which floats are whole numbers below ``limit`` in magnitude (NaN and infinities are not)."""
    integral = np.isfinite(numbers) & (np.abs(numbers) < limit)
    integral[integral] &= numbers[integral] % 1 == 0
    return integral


def _cell_text(cell: object, key: bool) -> str | None:
    """One cell of a mixed-type column as text: see ``as_text`` and ``key_text``."""
    if cell is None or cell is pd.NA or cell is pd.NaT:
        return None
    if isinstance(cell, str):
        return cell
    if isinstance(cell, bytes | bytearray | memoryview):
        try:
            return bytes(cell).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(cell).decode("utf-8", "backslashreplace") if key else UNREADABLE
    if isinstance(cell, bool | np.bool_):
        return str(cell) if key else UNREADABLE
    if isinstance(cell, int | np.integer):
        return str(int(cell))
    if isinstance(cell, Decimal):
        if cell.is_nan():  # comparing a signalling NaN would raise
            return None
        if cell.is_finite() and cell == cell.to_integral_value():
            return str(int(cell))
    elif isinstance(cell, float | np.floating):
        if math.isnan(cell):
            return None
        if math.isfinite(cell) and cell.is_integer():
            return str(int(cell))
    return str(cell) if key else UNREADABLE


def _fold_unicode(text: pa.Array) -> pa.Array:
    """Drop format characters (Unicode category Cf) and NFKC-fold, on the non-ASCII rows only (the rest
    has neither, and utf8proc costs more than the whole ASCII path)."""
    not_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(text), True))
    if not pc.any(not_ascii).as_py():
        return text
    folded = pc.replace_substring_regex(pc.filter(text, not_ascii), r"\p{Cf}", "")
    return pc.replace_with_mask(text, not_ascii, pc.utf8_normalize(folded, "NFKC"))


def hash_array(values: pa.Array, algorithm: str) -> pa.StringArray:
    """Lowercase hex digests of the UTF-8 values; nulls stay null.

    DataFusion's ``sha256``/``md5`` kernels hash a whole Arrow column in Rust, with the CPU's SHA
    instructions where it has them. hashlib would cost a Python call per value, which here is dearer
    than the hash itself (the benchmark's floor).
    """
    if algorithm not in DIGEST_LENGTH:
        raise TikTokConfigurationError(f"Unknown hash algorithm {algorithm!r}; use 'sha256' or 'md5'.")
    from datafusion import col, functions  # imported here: DAG files parse this module, only tasks hash

    value = col("value")
    digest = functions.encode(functions.sha256(value), "hex") if algorithm == "sha256" else functions.md5(value)
    context = _datafusion()
    frame = context.from_arrow(pa.table({"value": values}), name=_CHUNK_TABLE)
    try:
        digests = frame.select(digest).to_arrow_table().column(0)
    finally:
        context.deregister_table(_CHUNK_TABLE)  # the context would otherwise keep every chunk alive
    return digests.combine_chunks().cast(pa.string())


def digest_heads(digests: pa.Array) -> np.ndarray:
    """The first 8 bytes (64 random bits) of each valid digest, raw bytes or hex, as one uint64 each (read
    little-endian on any machine: stored fingerprints are made of them): Arrow slices the heads off, and a null
    slices to nothing, so the heads lie end to end."""
    count = len(digests) - digests.null_count
    if pa.types.is_binary(digests.type):
        return np.frombuffer(pc.binary_slice(digests, 0, 8).buffers()[2], dtype="<u8", count=count)
    heads = pc.utf8_slice_codeunits(digests, 0, 16).buffers()[2]
    words = np.frombuffer(heads, dtype="<u8", count=2 * count).reshape(count, 2)  # 8 hex digits a word
    return _hex_word(words[:, 0]) | (_hex_word(words[:, 1]) << np.uint64(32))


_BYTES_LOW_4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_BYTES_BIT_0 = np.uint64(0x0101010101010101)
_PAIRS_LOW_4 = np.uint64(0x000F000F000F000F)


def _hex_word(word: np.ndarray) -> np.ndarray:
    """Eight ASCII hex digits per uint64 (as read from memory) to the four bytes they spell, in the low half.

    A digit's value is its low four bits, plus 9 for a letter (a-f and A-F have bit 6 set); then neighbouring
    values pair into bytes, and the bytes close up. Whole arrays at a time: no Python bytes, no interpreter lock.
    """
    low_bits, letters = word & _BYTES_LOW_4, (word >> np.uint64(6)) & _BYTES_BIT_0
    nibbles = low_bits + np.uint64(9) * letters
    pairs = ((nibbles & _PAIRS_LOW_4) << np.uint64(4)) | ((nibbles >> np.uint64(8)) & _PAIRS_LOW_4)
    pairs = (pairs | (pairs >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    return (pairs | (pairs >> np.uint64(16))) & np.uint64(0xFFFFFFFF)


def digest_fingerprints(digests: Mapping[str, pa.Array]) -> np.ndarray:
    """A 64-bit fingerprint per row of its digests by field (raw bytes or hex, the same either way): the head
    of each (``digest_heads``), salted by the field's name, mixed and summed. So a row's fingerprint depends on
    which field holds which digest but not on the order of the fields, and a field the row lacks (or a match
    field added later) adds nothing. It is the identity that de-duplicates users, and what a mirror snapshot
    stores (its values must not change between versions)."""
    rows = len(next(iter(digests.values()))) if digests else 0
    total = np.zeros(rows, dtype=np.uint64)
    for name, column in digests.items():
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            continue
        with np.errstate(over="ignore"):
            mixed = (digest_heads(column) ^ _field_salt(name)) * _MIX
            total[valid] += (mixed ^ (mixed >> np.uint64(29))) * _MIX
    return total


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _field_salt(name: str) -> np.uint64:
    """A fixed 64-bit number per field name, the same in every process and version."""
    return np.frombuffer(hashlib.sha256(name.encode()).digest()[:8], dtype="<u8")[0]


_CHUNK_TABLE = "chunk"
_contexts = threading.local()


def _datafusion() -> SessionContext:
    """One single-partition DataFusion context per thread: each query then runs on one core, and
    parallelism belongs to the chunk workers (the kernels release the GIL)."""
    context = getattr(_contexts, "datafusion", None)
    if context is None:
        from datafusion import SessionConfig, SessionContext

        context = _contexts.datafusion = SessionContext(SessionConfig().with_target_partitions(1))
    return context


def prepare_field(
    values: pd.Series, field: MatchField, rules: FieldRules, phone_countries: pd.Series | None = None
) -> FieldOutcome:
    """Digests and outcomes of one field's column; ``phone_countries`` is the row-aligned
    ``phone_country_column`` (phones only)."""
    text = as_text(values)
    present = text.is_valid().to_numpy(zero_copy_only=False)
    algorithm = rules.algorithm(field)
    if field is MatchField.EMAIL:
        normalised, valid = _normalise_emails(text, rules.normalize_gmail)
    elif field is MatchField.PHONE:
        countries = None if phone_countries is None else _cells_as_text(phone_countries, key=True)
        positions = region_positions(countries, rules.default_phone_country, len(text))
        normalised, valid_rows = normalise_phones(text, positions)
        valid = pa.array(valid_rows)
    else:
        normalised, valid = _normalise_device_ids(text)
    valid = pc.fill_null(valid, False)
    digests = hash_array(pc.if_else(valid, normalised, pa.scalar(None, pa.string())), algorithm)
    if rules.accept_hashed:
        already_hashed = _already_hashed(text, algorithm)
        valid = pc.or_(valid, already_hashed)
        digests = pc.if_else(already_hashed, pc.ascii_lower(text), digests)
    return FieldOutcome(digests=digests, present=present, valid=valid.to_numpy(zero_copy_only=False) & present)


def _already_hashed(text: pa.Array, algorithm: str) -> pa.Array:
    """Anchored match of a full lowercase/uppercase hex digest: never a partial or mixed value."""
    pattern = rf"^[0-9a-fA-F]{{{DIGEST_LENGTH[algorithm]}}}$"
    return pc.fill_null(pc.match_substring_regex(text, pattern), False)


def _normalise_emails(text: pa.Array, normalize_gmail: bool) -> tuple[pa.Array, pa.Array]:
    emails = pc.utf8_lower(text)
    valid = pc.and_(
        pc.match_substring_regex(emails, EMAIL_PATTERN), pc.less_equal(pc.utf8_length(emails), MAX_EMAIL_LENGTH)
    )
    if normalize_gmail:
        emails = _canonical_gmail(emails, pc.fill_null(valid, False))
    return emails, valid


def _canonical_gmail(emails: pa.Array, valid: pa.Array) -> pa.Array:
    """Gmail ignores dots and ``+tags`` in the local part, and googlemail.com is gmail.com."""
    is_gmail = pc.and_(valid, pc.match_substring_regex(emails, r"@(gmail|googlemail)\.com$"))
    if not pc.any(is_gmail).as_py():
        return emails
    canonical = []
    for address in pc.filter(emails, is_gmail).to_pylist():
        local = address.rsplit("@", 1)[0].split("+", 1)[0].replace(".", "")
        canonical.append(f"{local}@gmail.com")
    return pc.replace_with_mask(emails, is_gmail, pa.array(canonical, type=pa.string()))


def _normalise_device_ids(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    ids = pc.ascii_lower(text)
    valid = pc.and_(pc.match_substring_regex(ids, UUID_PATTERN), pc.not_equal(ids, ZERO_UUID))
    return ids, valid
