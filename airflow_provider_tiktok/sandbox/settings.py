"""Emulator settings fixed at start: how strictly mappings are kept, and the limits TikTok does not document.

Documented limits (1-100 ids to delete, 1-10 advertisers to share with, names of 128 characters,
retention of 1-365 days, a lookalike seed of at least 100, at least 1,000 members after a file update)
are defaults here too, so a test can lower them to stay small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

MappingMode = Literal["strict", "sink"]
MAPPING_MODES: tuple[str, ...] = get_args(MappingMode)

#: Customer-file ``calculate_type`` values and the hex digest length of each line. FIRST_* is a mobile
#: advertising id of either platform (IDFA or GAID), as TikTok's "Encryption Type" enumeration names it.
CALCULATE_TYPE_DIGEST_LENGTH = {
    "EMAIL_SHA256": 64,
    "PHONE_SHA256": 64,
    "IDFA_SHA256": 64,
    "GAID_SHA256": 64,
    "FIRST_SHA256": 64,
    "IDFA_MD5": 32,
    "GAID_MD5": 32,
    "FIRST_MD5": 32,
}
LOOKALIKE_SIZES = ("NARROW", "BALANCED", "BROAD")
LOOKALIKE_MOBILE_OS = ("ALL", "ANDROID", "IOS")
LOOKALIKE_PLACEMENTS = ("TIKTOK", "PANGLE", "TOPBUZZ_BUZZVIDEO")
AUDIENCE_SUB_TYPES = ("NORMAL", "REACH_FREQUENCY")


@dataclass(frozen=True)
class EmulatorSettings:
    """Set once at start (``create_app(settings=...)`` or the CLI flags of the same names)."""

    #: ``strict`` parses and stores every member of ``segment/mapping/``; ``sink`` checks envelope,
    #: token, sizes and id_schema alignment, counts the users and stores nothing (for benchmarks).
    mapping_mode: MappingMode = "strict"
    #: APPEND / REMOVE / REPLACE fail when the audience would end smaller than this (TikTok: 1,000).
    min_audience_size: int = 1_000
    #: A lookalike's seed needs at least this many members (TikTok: 100).
    min_lookalike_seed: int = 100
    #: Largest customer file accepted, in bytes (TikTok documents none for the API).
    max_file_bytes: int = 50 * 1024 * 1024
    #: TikTok documents .txt and .csv files and refuses .zip; gzip is undocumented, so refused by default.
    accept_gzip_files: bool = False
    #: Business Centers as groups of advertiser ids. Empty: the advertisers a token is authorised for
    #: form one Business Center.
    business_centers: tuple[frozenset[str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.mapping_mode not in MAPPING_MODES:
            raise ValueError(f"mapping_mode must be one of {', '.join(MAPPING_MODES)}")

    def business_center_of(self, advertiser_id: str, token_advertisers: list[str]) -> frozenset[str]:
        """The advertisers an audience of ``advertiser_id`` may be shared with (itself included)."""
        for center in self.business_centers:
            if advertiser_id in center:
                return center
        if self.business_centers:
            return frozenset({advertiser_id})
        return frozenset(token_advertisers)
