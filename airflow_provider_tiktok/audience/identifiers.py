"""Normalise, validate and hash one match field for a whole chunk at once.

String work runs in Arrow's vectorised kernels and hashing in DataFusion's, so no step loops over values
in Python (bar the opt-in Gmail canonicalisation). Rules are SPEC §2 "Normalisation before hashing".
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$"
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"  # "limit ad tracking": identifies nobody
PHONE_PUNCTUATION = r"[\s\-\.\(\)/]"
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


@dataclass(frozen=True)
class PhoneCountry:
    calling_code: str
    trunk_prefix: str | None
    national_lengths: frozenset[int]


#: Enough to turn ordinary national numbers into E.164 without a general-purpose parser.
PHONE_COUNTRIES: dict[str, PhoneCountry] = {
    "US": PhoneCountry("1", "1", frozenset({10})),
    "CA": PhoneCountry("1", "1", frozenset({10})),
    "GB": PhoneCountry("44", "0", frozenset({9, 10})),
    "IE": PhoneCountry("353", "0", frozenset({7, 8, 9})),
    "FR": PhoneCountry("33", "0", frozenset({9})),
    "DE": PhoneCountry("49", "0", frozenset(range(6, 12))),
    "NL": PhoneCountry("31", "0", frozenset({9})),
    "BE": PhoneCountry("32", "0", frozenset({8, 9})),
    "ES": PhoneCountry("34", None, frozenset({9})),
    "IT": PhoneCountry("39", None, frozenset(range(6, 12))),
    "PT": PhoneCountry("351", None, frozenset({9})),
    "SE": PhoneCountry("46", "0", frozenset(range(7, 10))),
    "PL": PhoneCountry("48", None, frozenset({9})),
    "BR": PhoneCountry("55", "0", frozenset({10, 11})),
    "MX": PhoneCountry("52", None, frozenset({10})),
    "IN": PhoneCountry("91", "0", frozenset({10})),
    "JP": PhoneCountry("81", "0", frozenset({9, 10})),
    "KR": PhoneCountry("82", "0", frozenset({9, 10})),
    "AU": PhoneCountry("61", "0", frozenset({9})),
    "SG": PhoneCountry("65", None, frozenset({8})),
    "ID": PhoneCountry("62", "0", frozenset(range(9, 13))),
    "PH": PhoneCountry("63", "0", frozenset({10})),
    "VN": PhoneCountry("84", "0", frozenset({9, 10})),
    "TH": PhoneCountry("66", "0", frozenset({8, 9})),
    "MY": PhoneCountry("60", "0", frozenset({9, 10})),
    "AE": PhoneCountry("971", "0", frozenset({8, 9})),
    "SA": PhoneCountry("966", "0", frozenset({9})),
    "TR": PhoneCountry("90", "0", frozenset({10})),
}


def phone_country(code: str | None) -> PhoneCountry | None:
    if code is None:
        return None
    country = PHONE_COUNTRIES.get(code.upper())
    if country is None:
        raise TikTokConfigurationError(
            f"default_phone_country {code!r} is not supported; "
            f"use one of {', '.join(sorted(PHONE_COUNTRIES))} "
            "or send phones in E.164 (+<country code><number>)."
        )
    return country


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

    def __post_init__(self) -> None:
        if self.device_id_hash not in DIGEST_LENGTH:
            raise TikTokConfigurationError(f"device_id_hash must be 'sha256' or 'md5', not {self.device_id_hash!r}.")
        phone_country(self.default_phone_country)

    def algorithm(self, field: MatchField) -> str:
        return self.device_id_hash if field.is_device_id else "sha256"


@dataclass(frozen=True)
class FieldOutcome:
    """Per row of a chunk: a digest (null when unusable), and whether the value was present / valid."""

    digests: pa.Array
    present: np.ndarray
    valid: np.ndarray


def as_text(values: pd.Series) -> pa.Array:
    """Warehouse values as Arrow strings; numbers become digit strings, NaN/None/empty become null."""
    if pd.api.types.is_bool_dtype(values.dtype):
        text = pd.Series(UNREADABLE, index=values.index).where(values.notna())
    elif pd.api.types.is_float_dtype(values.dtype):
        # 1.6577770000e10 (a phone read as float) is 16577770000; 12.5 is nobody's identifier.
        integral = values.notna() & (values % 1 == 0)
        text = values.where(integral).astype("Int64").astype("string")
        text = text.mask(values.notna() & ~integral, UNREADABLE)
    elif pd.api.types.is_integer_dtype(values.dtype):
        text = values.astype("string")
    else:
        text = values.astype("string")
    array = pa.array(text.array, type=pa.string(), from_pandas=True)
    array = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(pc.utf8_length(array), 0), pa.scalar(None, pa.string()), array)


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


def prepare_field(values: pd.Series, field: MatchField, rules: FieldRules) -> FieldOutcome:
    text = as_text(values)
    present = text.is_valid().to_numpy(zero_copy_only=False)
    algorithm = rules.algorithm(field)
    if field is MatchField.EMAIL:
        normalised, valid = _normalise_emails(text, rules.normalize_gmail)
    elif field is MatchField.PHONE:
        normalised, valid = _normalise_phones(text, phone_country(rules.default_phone_country))
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
    valid = pc.match_substring_regex(emails, EMAIL_PATTERN)
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


def _normalise_phones(text: pa.Array, country: PhoneCountry | None) -> tuple[pa.Array, pa.Array]:
    # Fast path: most warehouses already hold E.164; only the rest pays for cleaning.
    clean = pc.fill_null(pc.match_substring_regex(text, E164_PATTERN), False)
    needs_work = pc.and_(pc.is_valid(text), pc.invert(clean))
    if not pc.any(needs_work).as_py():
        return text, clean
    messy = pc.filter(text, needs_work)
    messy = pc.replace_substring_regex(messy, PHONE_PUNCTUATION, "")
    messy = pc.replace_substring_regex(messy, r"^(tel:)?00", "+")
    messy = pc.replace_substring_regex(messy, r"^tel:", "")
    resolved = _with_country_code(messy, country)
    resolved_valid = pc.fill_null(pc.match_substring_regex(resolved, E164_PATTERN), False)
    return pc.replace_with_mask(text, needs_work, resolved), pc.replace_with_mask(clean, needs_work, resolved_valid)


def _with_country_code(numbers: pa.Array, country: PhoneCountry | None) -> pa.Array:
    """Give digits-only national numbers the country's calling code: as dialled, after the trunk
    prefix, or already carrying the code without ``+`` (first rule that fits wins).

    Anything else is returned as it is and fails the E.164 check unless it already starts with ``+``.
    """
    if country is None:
        return numbers
    digits_only = pc.fill_null(pc.match_substring_regex(numbers, r"^[0-9]+$"), False)
    length = pc.utf8_length(numbers)
    national_lengths = pa.array(sorted(country.national_lengths), type=length.type)

    def national_after(prefix: str) -> pa.Array:
        rest = pc.cast(pc.subtract(length, len(prefix)), length.type)
        return pc.and_(pc.and_(digits_only, pc.starts_with(numbers, prefix)), pc.is_in(rest, national_lengths))

    rules = [(national_after(""), f"+{country.calling_code}", 0)]
    if country.trunk_prefix:
        rules.append((national_after(country.trunk_prefix), f"+{country.calling_code}", len(country.trunk_prefix)))
    rules.append((national_after(country.calling_code), "+", 0))
    conditions = pc.make_struct(
        *(condition for condition, _, _ in rules), field_names=[str(i) for i in range(len(rules))]
    )
    choices = [
        pc.binary_join_element_wise(head, pc.utf8_slice_codeunits(numbers, dropped), "") for _, head, dropped in rules
    ]
    return pc.case_when(conditions, *choices, numbers)


def _normalise_device_ids(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    ids = pc.ascii_lower(text)
    valid = pc.and_(pc.match_substring_regex(ids, UUID_PATTERN), pc.not_equal(ids, ZERO_UUID))
    return ids, valid
