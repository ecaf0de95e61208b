"""TikTok Marketing API limits and id schemas (SPEC §2), in one place for client, core and emulator."""

from __future__ import annotations

MAX_USERS_PER_MAPPING = 10_000
MAX_REQUESTS_PER_SECOND = 50
MAX_AUDIENCES_PER_ADVERTISER = 400
MAX_AUDIENCE_NAME_LENGTH = 70
#: Hex digest length of each ``id_schema`` value.
ID_SCHEMA_DIGEST_LENGTH = {
    "EMAIL_SHA256": 64,
    "PHONE_SHA256": 64,
    "IDFA_SHA256": 64,
    "AAID_SHA256": 64,
    "IDFA_MD5": 32,
    "AAID_MD5": 32,
}
