"""Phone numbers to E.164 for every region ``phonenumbers`` knows, a whole chunk at a time.

``phonenumbers.parse`` per value is the reference (``tests/unit/audience/test_phone_corpus.py``) but runs at
~26 k numbers/s. Here its metadata (calling codes, international and national prefixes, possible lengths,
number patterns) is compiled once into lookup tables and regexes, and each step of its ``parse`` →
``is_possible_number`` runs as one Arrow kernel over the chunk. Region-specific regexes of all regions are
joined into one pattern: every number is prefixed with a three-digit tag naming its region, and each
alternative of the pattern starts with the tag of the region it belongs to.

Rules, in the order ``parse`` applies them (the region is the row's country, else ``default_phone_country``):

- extensions (``ext. 12``, ``x12``, ``#12``, ``;ext=12``) and a leading ``tel:`` are dropped, then spaces and
  ``- . ( ) / [ ] ~`` (and their Unicode twins); anything else but digits and a leading ``+`` is invalid;
- ``+<calling code>``, or the region's international prefix (``00``, ``011`` from NANP countries, ``810``, …)
  then a calling code; a calling code that does not exist is invalid;
- otherwise a number starting with the region's calling code loses it when only then it fits the region's
  number pattern (``447700900123`` in GB), else the region's calling code is added;
- the national (trunk) prefix (``0``, ``1``, …) is dropped when the rest still fits the region;
- the national number's length must be possible for the calling code's region (local-only lengths count).
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import PhoneMetadata, phonenumberutil

try:
    from re import _parser as _regex_parser  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _regex_parser

from airflow_provider_tiktok.exceptions import TikTokConfigurationError

#: ``phonenumbers`` refuses longer input outright.
MAX_INPUT_LENGTH = 250
MAX_NATIONAL_LENGTH = 17
MIN_NATIONAL_LENGTH = 2
NO_REGION = -1  # a row with no country and no default: only ``+`` numbers can be read
UNKNOWN_REGION = -2  # a country code nobody knows: the row's phone is invalid

#: As ``phonenumbers`` reads extensions: up to 20 digits after ``;ext=`` or ``ext``, up to 9 after ``x # ~``.
EXTENSION_PATTERN = (
    r"(?i)(?:;ext=[0-9]{1,20}"
    r"|[ \t,]*e?xt(?:ension)?n?[:.]?[ \t,-]*[0-9]{1,20}#?"
    r"|[ \t,]*[x#~][:.]?[ \t,-]*[0-9]{1,9}#?)$"
)
PUNCTUATION_PATTERN = r"[\s\x{00AD}\x{200B}\x{2060}\-\.\(\)/\[\]~\x{2010}-\x{2015}\x{2212}\x{30FC}\x{2053}\x{223C}]"
PLAIN_NUMBER_PATTERN = r"^\+*[0-9]+$"
SIMPLE_NUMBER_PATTERN = r"^\+?[0-9]+$"

# _test_number_length outcomes, as phonenumbers' ValidationResult numbers them.
_POSSIBLE = phonenumberutil.ValidationResult.IS_POSSIBLE
_LOCAL_ONLY = phonenumberutil.ValidationResult.IS_POSSIBLE_LOCAL_ONLY
_TOO_LONG = phonenumberutil.ValidationResult.TOO_LONG
_LENGTH_COLUMNS = MAX_NATIONAL_LENGTH + 2  # every length above the last is "too long" everywhere


@dataclass(frozen=True)
class _Rules:
    """``phonenumbers`` metadata as arrays indexed by a region's position (non-geographic entities included)."""

    metadata: tuple[PhoneMetadata, ...]
    region_codes: pa.Array  # ISO code per position (null for non-geographic entities)
    tags: pa.Array  # "000", "001", … per position, plus a last tag that no pattern names
    calling_codes: pa.Array  # every calling code, as text
    main_position: np.ndarray  # per calling code: position of its main region
    region_calling_code: pa.Array  # per position: its calling code, as text
    region_code_position: np.ndarray  # per position: its calling code's position in ``calling_codes``
    code_of_head: np.ndarray  # [first three digits as a number]: position of the calling code they start with
    code_length_of_head: np.ndarray  # … and that code's length (codes are prefix-free: at most one fits)
    main_of_region: np.ndarray  # per position: position of the main region of its calling code
    calling_code_first: np.ndarray  # per position: first digit of its calling code
    idd_first: np.ndarray  # [position, digit]: can the international prefix start with that digit
    national_prefix_first: np.ndarray  # [position, digit]: can the national prefix start with that digit
    length_status: np.ndarray  # [position, min(length, last column)] -> ValidationResult
    rewriting: np.ndarray  # positions whose national prefix rule rewrites digits


@functools.cache
def _rules() -> _Rules:
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    entities = sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    metadata = [PhoneMetadata.metadata_for_region(r) for r in regions]
    metadata += [PhoneMetadata.metadata_for_nongeo_region(c) for c in entities]
    position = {**{r: i for i, r in enumerate(regions)}, **{c: len(regions) + i for i, c in enumerate(entities)}}
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    main = [position.get(phonenumbers.region_code_for_country_code(code), position.get(code)) for code in codes]
    status = np.array(
        [[phonenumberutil._test_number_length("0" * length, m) for length in range(_LENGTH_COLUMNS)] for m in metadata],
        dtype=np.int8,
    )
    code_of_head, code_length_of_head = np.full(1000, -1, dtype=np.int64), np.zeros(1000, dtype=np.int64)
    for head in range(100, 1000):  # no calling code starts with 0
        for size in (1, 2, 3):
            code = head // 10 ** (3 - size)
            if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                code_of_head[head], code_length_of_head[head] = codes.index(code), size
    main_of_code = dict(zip(codes, main, strict=True))
    return _Rules(
        code_of_head=code_of_head,
        code_length_of_head=code_length_of_head,
        main_of_region=np.array([main_of_code[m.country_code] for m in metadata], dtype=np.int64),
        calling_code_first=np.array([int(str(m.country_code)[0]) for m in metadata], dtype=np.int64),
        idd_first=np.array([_first_digits(m.international_prefix, False) for m in metadata], dtype=bool),
        national_prefix_first=np.array(
            [_first_digits(m.national_prefix_for_parsing, True) for m in metadata], dtype=bool
        ),
        metadata=tuple(metadata),
        region_codes=pa.array(regions + [None] * len(entities), pa.string()),
        tags=pa.array([f"{i:03d}" for i in range(len(metadata) + 1)], pa.string()),
        calling_codes=pa.array([str(c) for c in codes], pa.string()),
        main_position=np.array(main, dtype=np.int64),
        region_calling_code=pa.array([str(m.country_code) for m in metadata], pa.string()),
        region_code_position=np.array([codes.index(m.country_code) for m in metadata], dtype=np.int64),
        length_status=status,
        rewriting=np.array([i for i, m in enumerate(metadata) if m.national_prefix_transform_rule], dtype=np.int64),
    )


def _first_digits(pattern: str | None, empty_match_strips_nothing: bool) -> list[bool]:
    """Per digit: can a match of ``pattern`` at the start of a number starting with it change the number.
    Read from the regex's parse tree; every digit when the tree holds something this does not follow, or
    when the pattern can match empty and that would matter (a superset is always safe). An empty national
    prefix match (AR's) strips nothing; an empty international prefix match would read a calling code."""
    if not pattern:
        return [False] * 10
    try:
        first, can_be_empty = _first_of_sequence(_regex_parser.parse(pattern))
    except _Unfollowed:
        first, can_be_empty = set(_DIGITS), True
    if can_be_empty and not empty_match_strips_nothing:
        first = set(_DIGITS)
    return [d in first for d in _DIGITS]


_DIGITS = "0123456789"


class _Unfollowed(Exception):
    pass


def _first_of_sequence(items: list) -> tuple[set[str], bool]:
    """First characters of a sequence of parse-tree items, and whether it can match empty."""
    first: set[str] = set()
    for op, argument in items:
        item_first, nullable = _first_of_item(str(op), argument)
        first |= item_first
        if not nullable:
            return first, False
    return first, True


def _first_of_item(op: str, argument) -> tuple[set[str], bool]:
    if op == "LITERAL":
        return {chr(argument)}, False
    if op == "IN":
        chars: set[str] = set()
        for kind, value in argument:
            if str(kind) == "LITERAL":
                chars.add(chr(value))
            elif str(kind) == "RANGE":
                chars |= {chr(c) for c in range(value[0], value[1] + 1)}
            elif str(kind) == "CATEGORY" and str(value) == "CATEGORY_DIGIT":
                chars |= set(_DIGITS)
            else:
                raise _Unfollowed
        return chars, False
    if op == "SUBPATTERN":
        return _first_of_sequence(argument[-1])
    if op in ("MAX_REPEAT", "MIN_REPEAT"):
        low, _, items = argument
        first, nullable = _first_of_sequence(items)
        return first, nullable or low == 0
    if op == "BRANCH":
        branches = [_first_of_sequence(items) for items in argument[1]]
        return set().union(*(f for f, _ in branches)), any(n for _, n in branches)
    if op == "AT":
        return set(), True
    raise _Unfollowed


def check_region(code: str | None) -> None:
    """Refuse a ``default_phone_country`` that ``phonenumbers`` does not know, naming it."""
    if code is not None and code.strip().upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise TikTokConfigurationError(
            f"default_phone_country {code!r} is not a region phonenumbers knows; use an ISO 3166 alpha-2 code "
            "such as 'US' or 'GB', or send phones in E.164 (+<country code><number>)."
        )


def region_positions(codes: pa.Array | None, default: str | None, rows: int) -> np.ndarray:
    """Per row: the position of its region, ``NO_REGION`` when it has none, ``UNKNOWN_REGION`` for a code
    nobody knows.

    A null or blank code falls back to ``default``.
    """
    rules = _rules()
    fallback = (
        NO_REGION
        if default is None
        else int(pc.index_in(pa.scalar(default.strip().upper()), rules.region_codes).as_py())
    )
    if codes is None:
        return np.full(rows, fallback, dtype=np.int64)
    codes = pc.utf8_upper(pc.utf8_trim_whitespace(codes))
    blank = pc.fill_null(pc.equal(pc.utf8_length(codes), 0), True).to_numpy(zero_copy_only=False)
    found = pc.index_in(codes, rules.region_codes).to_numpy(zero_copy_only=False)
    positions = np.where(np.isnan(found), UNKNOWN_REGION, np.nan_to_num(found)).astype(np.int64)
    positions[blank] = fallback
    return positions


def normalise_phones(text: pa.Array, positions: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """E.164 strings and a validity mask for ``text`` (trimmed, nulls for missing) read in each row's region.

    Most rows take a shortcut that needs no regex: ``+`` and digits whose national part cannot start with
    its region's national prefix, or national digits that cannot start with their region's international
    prefix, calling code or national prefix (first digits decide). The rest follow ``parse`` step by step.
    """
    text = text.cast(pa.string())
    valid = pc.is_valid(text).to_numpy(zero_copy_only=False) & (positions != UNKNOWN_REGION)
    long = valid & (np.diff(_data(text)[0]) > MAX_INPUT_LENGTH)  # in bytes: check characters only then
    if long.any():
        valid[long] = pc.utf8_length(pc.filter(text, pa.array(long))).to_numpy() <= MAX_INPUT_LENGTH
    simple = pc.fill_null(pc.match_substring_regex(text, SIMPLE_NUMBER_PATTERN), False)
    messy = valid & ~simple.to_numpy(zero_copy_only=False)
    if messy.any():
        cleaned = _strip_formatting(pc.filter(text, pa.array(messy)))
        text = pc.replace_with_mask(text, pa.array(messy), cleaned)
        readable = pc.fill_null(pc.match_substring_regex(cleaned, PLAIN_NUMBER_PATTERN), False)
        valid[messy] = readable.to_numpy(zero_copy_only=False)
    fast, e164 = _shortcut(text, positions, valid)
    slow = valid & ~fast
    if slow.any():
        subset = pc.filter(text, pa.array(slow))
        slow_e164, slow_valid = _parse(subset, positions[slow])
        e164 = pc.replace_with_mask(e164, pa.array(slow), slow_e164)
        valid[slow] = slow_valid
    valid &= pc.is_valid(e164).to_numpy(zero_copy_only=False)
    return e164, valid


def _shortcut(text: pa.Array, positions: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Rows that the first digits settle, and their E.164 (null where impossible, and for other rows)."""
    rules = _rules()
    head, lengths = _head_bytes(text, 5)
    digit = _digit_values(head)
    plus = valid & (head[:, 0] == ord("+")) & (head[:, 1] != ord("+"))
    code_position, code_length = _calling_code_of_heads(digit[:, 1:4])
    first_national = digit[np.arange(len(digit)), np.minimum(code_length + 1, 4)]
    main = rules.main_position[np.maximum(code_position, 0)]
    plus_fast = plus & (code_position >= 0) & (lengths > 3) & (first_national >= 0)
    plus_fast &= ~rules.national_prefix_first[main, np.maximum(first_national, 0)]
    region = np.maximum(positions, 0)
    first = np.maximum(digit[:, 0], 0)
    national_fast = valid & (digit[:, 0] >= 0) & (positions >= 0) & (rules.calling_code_first[region] != first)
    national_fast &= ~rules.idd_first[region, first] & ~rules.national_prefix_first[region, first]
    national_length = np.where(plus_fast, lengths - 1 - code_length, lengths)
    main = np.where(national_fast, rules.main_of_region[region], main)
    fast = plus_fast | national_fast
    status = rules.length_status[main, np.clip(national_length, 0, _LENGTH_COLUMNS - 1)]
    possible = fast & (national_length >= MIN_NATIONAL_LENGTH) & ((status == _POSSIBLE) | (status == _LOCAL_ONLY))
    e164 = pc.if_else(pa.array(possible & plus_fast), text, pa.scalar(None, pa.string()))
    with_code = possible & national_fast
    if with_code.any():
        codes = rules.region_calling_code.take(pa.array(region[with_code]))
        joined = pc.binary_join_element_wise("+", codes, pc.filter(text, pa.array(with_code)), "")
        e164 = pc.replace_with_mask(e164, pa.array(with_code), joined)
    return fast, e164


def _head_bytes(values: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``width`` bytes of each value (0 past its end) and its length in bytes, from Arrow's buffers."""
    offsets, data = _data(values)
    starts, lengths = offsets[:-1], np.diff(offsets)
    padded = np.concatenate((data, np.zeros(width, dtype=np.uint8)))
    head = padded[starts[:, None] + np.arange(width)]
    head[np.arange(width) >= lengths[:, None]] = 0
    return head, lengths


def _digit_values(head: np.ndarray) -> np.ndarray:
    """Bytes as digit values, -1 for anything but an ASCII digit."""
    digit = head.astype(np.int16) - ord("0")
    digit[(digit < 0) | (digit > 9)] = -1
    return digit


def _calling_code_of_heads(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position in ``calling_codes`` of the code that the three digit columns start with (-1: none), and its
    length: one lookup of the three digits, kept where enough of them are digits."""
    rules = _rules()
    first_known = digits[:, 0] >= 0
    two_known = first_known & (digits[:, 1] >= 0)
    known = first_known.view(np.int8) + two_known.view(np.int8) + (two_known & (digits[:, 2] >= 0)).view(np.int8)
    value = np.maximum(digits, 0)
    head = value[:, 0] * 100 + value[:, 1] * 10 + value[:, 2]
    position, length = rules.code_of_head[head], rules.code_length_of_head[head]
    found = (position >= 0) & (known >= length)
    return np.where(found, position, -1), np.where(found, length, 0)


def _parse(digits_and_plus: pa.Array, positions: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """``parse`` → ``is_possible_number`` → E.164, step by step, for cleaned ``+``/digit strings."""
    rules = _rules()
    rows = len(digits_and_plus)
    valid = np.ones(rows, dtype=bool)
    plus = pc.starts_with(digits_and_plus, "+").to_numpy(zero_copy_only=False)
    digits = pc.utf8_ltrim(digits_and_plus, "+")
    has_region = positions >= 0

    code_position, _ = _calling_code(digits)
    try_idd = has_region & (~plus | (code_position < 0))
    after_idd = _strip_idd(digits, positions, try_idd)
    idd = try_idd & pc.is_valid(after_idd).to_numpy(zero_copy_only=False)
    number = pc.coalesce(after_idd, digits)
    international = plus | idd
    code_position, code_length = _calling_code(number)
    too_short = _lengths(number) <= MIN_NATIONAL_LENGTH
    valid &= ~(international & ((code_position < 0) | too_short))
    valid &= international | has_region

    national = _slice_from(number, np.where(international, code_length, 0))
    code_from_number = _strip_own_calling_code(number, positions, valid & ~international, code_position, code_length)
    took_code = pc.is_valid(code_from_number).to_numpy(zero_copy_only=False)
    national = pc.coalesce(code_from_number, national)

    main = np.full(rows, NO_REGION, dtype=np.int64)
    main[international] = rules.main_position[code_position[international]]
    national_form = ~international & has_region
    main[national_form] = rules.main_of_region[positions[national_form]]
    metadata_position = np.where(international | took_code, main, positions)
    valid &= _lengths(national) >= MIN_NATIONAL_LENGTH

    stripped = _strip_national_prefix(national, metadata_position, valid)
    status = _length_status(stripped, metadata_position)
    accept = valid & ((status == _POSSIBLE) | (status == _TOO_LONG))
    national = pc.if_else(pa.array(accept), stripped, national)
    valid &= _lengths(national) <= MAX_NATIONAL_LENGTH
    status = _length_status(national, main)
    valid &= (status == _POSSIBLE) | (status == _LOCAL_ONLY)

    calling_code = rules.region_calling_code.take(pa.array(np.where(valid, main, 0)))
    e164 = pc.binary_join_element_wise("+", calling_code, national, "")
    return pc.if_else(pa.array(valid), e164, pa.scalar(None, pa.string())), valid


def _strip_formatting(text: pa.Array) -> pa.Array:
    """Drop punctuation, extensions and ``tel:``. Rows of digits, ``+`` and ASCII punctuation only (the usual
    case) lose their punctuation bytes in numpy; the rest go through Unicode folding and regexes."""
    unusual = _count_bytes(text, _NOT_PLAIN_OR_PUNCTUATION) > 0
    plain = _keep_bytes(pc.filter(text, pa.array(~unusual)), _DIGIT_OR_PLUS)
    if not unusual.any():
        return plain
    odd = pc.filter(text, pa.array(unusual))
    not_ascii = pc.invert(pc.string_is_ascii(odd))
    if pc.any(not_ascii).as_py():  # fullwidth digits and plus signs become ASCII
        odd = pc.replace_with_mask(odd, not_ascii, pc.utf8_normalize(pc.filter(odd, not_ascii), "NFKC"))
    odd = pc.replace_substring_regex(odd, EXTENSION_PATTERN, "", max_replacements=1)
    odd = pc.replace_substring_regex(odd, r"(?i)^tel:", "", max_replacements=1)
    odd = pc.replace_substring_regex(odd, PUNCTUATION_PATTERN, "")
    result = pa.nulls(len(text), pa.string())
    result = pc.replace_with_mask(result, pa.array(~unusual), plain)
    return pc.replace_with_mask(result, pa.array(unusual), odd)


def _byte_table(characters: str) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[[ord(c) for c in characters]] = True
    return table


_DIGIT_OR_PLUS = _byte_table("0123456789+")
_NOT_PLAIN_OR_PUNCTUATION = ~_byte_table("0123456789+ \t-.()/[]~")


def _data(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (one more than rows) and the UTF-8 data buffer of a string array."""
    _, offset_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets, data


def _count_bytes(values: pa.Array, table: np.ndarray) -> np.ndarray:
    """Per row: how many of its bytes ``table`` marks."""
    offsets, data = _data(values)
    marked = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(table[data], out=marked[1:])
    return marked[offsets[1:]] - marked[offsets[:-1]]


def _keep_bytes(values: pa.Array, table: np.ndarray) -> pa.Array:
    """``values`` (no nulls) with only the bytes ``table`` marks: a new array built straight from buffers."""
    offsets, data = _data(values)
    keep = np.zeros(len(data), dtype=bool)
    keep[offsets[0] : offsets[-1]] = table[data[offsets[0] : offsets[-1]]]
    kept = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum(keep, out=kept[1:])
    new_offsets = kept[offsets] - kept[offsets[0]]
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(new_offsets), pa.py_buffer(data[keep]))


def _lengths(values: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)


def _calling_code(digits: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    return _calling_code_of_heads(_digit_values(_head_bytes(digits, 3)[0]))


def _slice_from(values: pa.Array, starts: np.ndarray) -> pa.Array:
    """``values[i][starts[i]:]`` for small per-row ``starts``."""
    result = values
    for start in np.unique(starts):
        if start:
            result = pc.if_else(pa.array(starts == start), pc.utf8_slice_codeunits(values, int(start)), result)
    return result


def _tagged(values: pa.Array, positions: np.ndarray) -> pa.Array:
    rules = _rules()
    tags = rules.tags.take(pa.array(np.where(positions >= 0, positions, len(rules.tags) - 1)))
    return pc.binary_join_element_wise(tags, values, "")


def _pattern(kind: str, positions: np.ndarray) -> str | None:
    present = tuple(int(p) for p in np.unique(positions) if p >= 0)
    return _combined_pattern(kind, present)


@functools.lru_cache(maxsize=512)  # keyed by the set of regions a chunk has: bounded, chunks vary
def _combined_pattern(kind: str, positions: tuple[int, ...]) -> str | None:
    """One regex for the ``kind`` rule of the regions at ``positions``: prefix rules match at the start,
    ``general`` (the region's whole number pattern) must match the whole national number."""
    rules = _rules()
    by_rule: dict[str, list[str]] = {}
    for position in positions:
        metadata = rules.metadata[position]
        rule = {
            "idd": metadata.international_prefix,
            "national_prefix": metadata.national_prefix_for_parsing,
            "general": metadata.general_desc.national_number_pattern,
        }[kind]
        if rule:
            by_rule.setdefault(rule, []).append(rules.tags[position].as_py())
    if not by_rule:
        return None
    alternatives = "|".join(f"(?:{'|'.join(tags)})(?:{rule})" for rule, tags in by_rule.items())
    return f"^(?:{alternatives})$" if kind == "general" else f"^(?:{alternatives})"


def _matches(kind: str, values: pa.Array, positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` match the ``kind`` rule of their own region."""
    found = np.zeros(len(values), dtype=bool)
    pattern = _pattern(kind, positions[rows])
    if pattern is None or not rows.any():
        return found
    subset = _tagged(pc.filter(values, pa.array(rows)), positions[rows])
    found[rows] = pc.fill_null(pc.match_substring_regex(subset, pattern), False).to_numpy(zero_copy_only=False)
    return found


def _strip_prefix(kind: str, values: pa.Array, positions: np.ndarray, rows: np.ndarray) -> pa.Array:
    """``values`` without the ``kind`` prefix of their region, null where it does not start them."""
    matched = _matches(kind, values, positions, rows)
    result = pa.nulls(len(values), pa.string())
    if matched.any():
        subset = _tagged(pc.filter(values, pa.array(matched)), positions[matched])
        stripped = pc.replace_substring_regex(subset, _pattern(kind, positions[matched]), "", max_replacements=1)
        result = pc.replace_with_mask(result, pa.array(matched), stripped)
    return result


def _strip_idd(digits: pa.Array, positions: np.ndarray, rows: np.ndarray) -> pa.Array:
    """Digits after the region's international prefix; null where there is none. A 0 right after it means
    the prefix was not one (no calling code starts with 0)."""
    first = np.maximum(_digit_values(_head_bytes(digits, 1)[0])[:, 0], 0)
    rows = rows & _rules().idd_first[np.maximum(positions, 0), first]
    stripped = _strip_prefix("idd", digits, positions, rows)
    return pc.if_else(pc.fill_null(pc.starts_with(stripped, "0"), False), pa.scalar(None, pa.string()), stripped)


def _strip_own_calling_code(
    number: pa.Array, positions: np.ndarray, rows: np.ndarray, code_position: np.ndarray, code_length: np.ndarray
) -> pa.Array:
    """National number of a number written with its region's calling code but no ``+`` (``447700900123`` in
    GB); null where the code is better read as part of the national number, as ``parse`` decides.
    ``code_position``/``code_length``: the calling code each number starts with (``_calling_code``)."""
    result = pa.nulls(len(number), pa.string())
    starts = rows & (code_position == _rules().region_code_position[np.maximum(positions, 0)])
    if not starts.any():
        return result
    rest = _strip_national_prefix(_slice_from(number, np.where(starts, code_length, 0)), positions, starts)
    took = starts & (
        (~_matches("general", number, positions, starts) & _matches("general", rest, positions, starts))
        | (_length_status(number, positions) == _TOO_LONG)
    )
    return pc.if_else(pa.array(took), rest, result)


def _strip_national_prefix(national: pa.Array, positions: np.ndarray, rows: np.ndarray) -> pa.Array:
    """``national`` without its region's national prefix where ``parse`` would drop it: unless the number
    fitted the region's pattern before and no longer does."""
    rows = rows & (positions >= 0)
    rewritten, rewrites = _rewrite_national_prefix(national, positions, rows)
    candidate = pc.coalesce(rewritten, _strip_prefix("national_prefix", national, positions, rows & ~rewrites))
    changed = pc.is_valid(candidate).to_numpy(zero_copy_only=False)
    if changed.any():
        viable_before = _matches("general", national, positions, changed)
        viable_after = _matches("general", pc.coalesce(candidate, national), positions, changed)
        changed &= ~(viable_before & ~viable_after)
    return pc.if_else(pa.array(changed), candidate, national)


def _rewrite_national_prefix(
    national: pa.Array, positions: np.ndarray, rows: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Regions whose national prefix rule rewrites digits (AR's ``15`` mobile prefix, 7-digit local numbers of
    NANP islands) rewrite where the rule's last group took part in the match: the rewritten numbers (null
    elsewhere) and where they are. One pass per such region present."""
    rules = _rules()
    result = pa.nulls(len(national), pa.string())
    rewrites = np.zeros(len(national), dtype=bool)
    for position in np.unique(positions[rows & np.isin(positions, rules.rewriting)]):
        metadata = rules.metadata[position]
        here = np.flatnonzero(rows & (positions == position))
        subset = pc.take(national, pa.array(here))
        prefix = metadata.national_prefix_for_parsing
        groups = pc.extract_regex(subset, f"^(?:{_named_groups(prefix)})")
        last_group = groups.field(f"g{re.compile(prefix).groups}")
        took_part = pc.fill_null(pc.greater(pc.utf8_length(last_group), 0), False)
        if not pc.any(took_part).as_py():
            continue
        rule = metadata.national_prefix_transform_rule
        rewritten = pc.replace_substring_regex(subset, f"^(?:{prefix})", rule, max_replacements=1)
        mask = np.zeros(len(national), dtype=bool)
        mask[here[took_part.to_numpy(zero_copy_only=False)]] = True
        result = pc.replace_with_mask(result, pa.array(mask), pc.filter(rewritten, took_part))
        rewrites |= mask
    return result, rewrites


def _named_groups(pattern: str) -> str:
    """Arrow's ``extract_regex`` wants named groups: ``(`` … becomes ``(?P<g1>`` …, numbered as ``re`` does."""
    numbers = itertools.count(1)
    return re.sub(r"\((?!\?)", lambda _: f"(?P<g{next(numbers)}>", pattern)


def _length_status(national: pa.Array, positions: np.ndarray) -> np.ndarray:
    """``phonenumbers``' length verdict for each row's region (-1 where the row has none)."""
    lengths = np.minimum(_lengths(national), _LENGTH_COLUMNS - 1)
    status = _rules().length_status[np.maximum(positions, 0), lengths]
    return np.where(positions >= 0, status, -1)
