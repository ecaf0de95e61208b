"""Our vectorised phone rules against ``phonenumbers`` itself, over every region it knows.

The corpus: each region's example number of each type (and of each non-geographic calling code), its last
digits varied, written in E.164, national, international, ``00``/``011`` (dialled from another region),
RFC 3966, punctuated, with an extension, fullwidth, and broken (a digit dropped or added, a calling code that
does not exist, digits cut short, a letter typo). The reference verdict for a string and its row's region is
``phonenumbers.parse`` → ``is_possible_number`` → E.164.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import phonenumbers
import pyarrow as pa
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from airflow_provider_tiktok.audience.phones import _rules, normalise_phones, region_positions

TYPES = [t for t in vars(PhoneNumberType).values() if isinstance(t, int) and t >= 0]
VARIANTS_PER_EXAMPLE = 9
MIN_AGREEMENT = 0.995
#: Numbers that also get a letter typo: the one deliberate divergence (phonenumbers drops one or two letters
#: and reads three as a vanity keypad; we refuse any letter rather than send some other number's digest).
LETTER_TYPO_SHARE = 0.1


def reference(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    return (
        phonenumbers.format_number(number, PhoneNumberFormat.E164) if phonenumbers.is_possible_number(number) else None
    )


def dialling_prefix(region: str) -> str | None:
    metadata = PhoneMetadata.metadata_for_region(region)
    prefix = metadata.preferred_international_prefix or metadata.international_prefix
    return prefix if prefix and prefix.isdigit() else None


def vary(number: phonenumbers.PhoneNumber, rng: random.Random) -> phonenumbers.PhoneNumber:
    """Same shape, other last digits: keeps leading zeros and the number's length."""
    national = phonenumbers.national_significant_number(number)
    tail = min(3, len(national) - 1)
    digits = national[:-tail] + "".join(rng.choice("0123456789") for _ in range(tail))
    return phonenumbers.parse("+" + str(number.country_code) + digits)


def written_forms(number: phonenumbers.PhoneNumber, region: str, rng: random.Random) -> list[tuple[str, str, str]]:
    """``(form, text, row region)`` for one number."""
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    elsewhere = rng.choice(REGIONS)
    forms = [
        ("e164", e164, elsewhere),
        ("international", international, elsewhere),
        ("national", national, region),
        ("national digits", "".join(c for c in national if c.isdigit()), region),
        ("rfc3966", phonenumbers.format_number(number, PhoneNumberFormat.RFC3966).replace("-", " "), elsewhere),
        ("punctuated", international.replace(" ", rng.choice(["-", ".", " / ", "  "])), elsewhere),
        ("extension", f"{national} {rng.choice(['ext. ', 'x', 'ext', ' #'])}{rng.randint(1, 999)}", region),
        ("calling code without +", e164[1:], region),
        ("drop a digit", e164[:-1], elsewhere),
        ("add a digit", e164 + str(rng.randint(0, 9)), elsewhere),
        ("no such calling code", "+999" + e164[4:], elsewhere),
        ("cut short", national[: max(3, len(national) // 2)], region),
        ("trunk prefix in brackets", international.replace(" ", " (0)", 1), elsewhere),
        ("fullwidth", e164.translate(FULLWIDTH), elsewhere),
        ("tel: prefix", "tel:" + e164, elsewhere),
    ]
    if rng.random() < LETTER_TYPO_SHARE:
        forms.append(("a letter O for a zero", e164[:-1] + "O", elsewhere))
    caller = rng.choice(DIALLERS)
    forms.append(("idd " + dialling_prefix(caller), f"{dialling_prefix(caller)} {international[1:]}", caller))
    return forms


FULLWIDTH = {ord(c): ord(c) + 0xFEE0 for c in "+0123456789"}
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
DIALLERS = [r for r in REGIONS if dialling_prefix(r)]


def corpus() -> list[tuple[str, str, str]]:
    rng = random.Random(15)
    rows = []
    for region in REGIONS:
        for number_type in TYPES:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is None:
                continue
            for _ in range(VARIANTS_PER_EXAMPLE):
                rows.extend(written_forms(vary(example, rng), region, rng))
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):  # +800 freephone, +882 networks, …
        example = phonenumbers.example_number_for_non_geo_entity(code)
        for _ in range(VARIANTS_PER_EXAMPLE):
            rows.extend(written_forms(vary(example, rng), rng.choice(REGIONS), rng))
    return rows


@pytest.fixture(scope="module")
def verdicts():
    rows = corpus()
    texts = pa.array([text for _, text, _ in rows], pa.string())
    regions = pa.array([region for _, _, region in rows], pa.string())
    ours, _ = normalise_phones(texts, region_positions(regions, None, len(rows)))
    return rows, ours.to_pylist(), [reference(text, region) for _, text, region in rows]


def test_corpus_spans_the_world(verdicts):
    rows, _, expected = verdicts
    assert len(rows) >= 100_000
    assert len({region for _, _, region in rows}) >= 200
    assert 0.3 < sum(e is not None for e in expected) / len(rows) < 0.95  # both verdicts well represented


def test_our_e164_agrees_with_phonenumbers(verdicts):
    rows, ours, expected = verdicts
    disagreements: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], tuple[str, str, str | None, str | None]] = {}
    for (form, text, region), got, want in zip(rows, ours, expected, strict=True):
        if got != want:
            kind = "we refuse" if got is None else "they refuse" if want is None else "different E.164"
            disagreements[form, kind] += 1
            examples.setdefault((form, kind), (text, region, got, want))
    agreement = 1 - sum(disagreements.values()) / len(rows)
    print(f"\n{len(rows):,} phone strings, {len({r for _, _, r in rows})} regions: agreement {agreement:.4%}")
    for (form, kind), count in disagreements.most_common():
        print(f"  {count:>6}  {form:<24} {kind:<16} e.g. {examples[form, kind]}")
    assert agreement >= MIN_AGREEMENT


def test_a_letter_in_a_number_is_refused_where_phonenumbers_guesses():
    texts = pa.array(["+44 20 7946 095O", "+1 657 ABC 0000"], pa.string())
    ours, _ = normalise_phones(texts, region_positions(None, "GB", 2))
    assert ours.to_pylist() == [None, None]
    assert [reference(t, "GB") for t in texts.to_pylist()] == ["+44207946095", "+16572220000"]


def test_first_digit_tables_never_hide_a_prefix_that_could_match():
    """The shortcut trusts these tables: a digit marked False must never start a prefix that changes a number."""
    rules = _rules()
    rng = random.Random(3)
    tails = ["".join(rng.choice("0123456789") for _ in range(rng.randint(0, 16))) for _ in range(300)]
    for position, metadata in enumerate(rules.metadata):
        for table, pattern, empty_is_harmless in (
            (rules.idd_first, metadata.international_prefix, False),
            (rules.national_prefix_first, metadata.national_prefix_for_parsing, True),
        ):
            for digit in (d for d in range(10) if pattern and not table[position, d]):
                for tail in tails:
                    match = re.match(pattern, str(digit) + tail)
                    assert match is None or (empty_is_harmless and match.end() == 0), (metadata.id, pattern, tail)
