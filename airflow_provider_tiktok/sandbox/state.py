"""The emulator's world: apps, tokens, advertisers, audiences, customer files and memberships, in SQLite.

Memberships live in memory as one set per audience; each membership change (a mapping request or a
customer-file action) is appended to SQLite as a single row (its member keys joined), and replayed at
start. One insert per request instead of 10,000 keeps the emulator off the critical path of our
benchmarks. Audience attributes beyond id, owner and name (kind, sharing, ad groups...) are one JSON row.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_provider_tiktok.limits import MAX_AUDIENCE_NAME_LENGTH, MAX_AUDIENCES_PER_ADVERTISER

AUTH_CODE_TTL_SECONDS = 3600
FIRST_AUDIENCE_ID = 7_100_000_000_001
DEFAULT_RETENTION_DAYS = 365

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (app_id TEXT PRIMARY KEY, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY, app_id TEXT NOT NULL, advertiser_ids TEXT NOT NULL, revoked INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS auth_codes (
    code TEXT PRIMARY KEY, app_id TEXT NOT NULL, advertiser_ids TEXT NOT NULL, issued REAL NOT NULL,
    used INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS audiences (
    audience_id TEXT PRIMARY KEY, advertiser_id TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
    deleted INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS audience_attributes (audience_id TEXT PRIMARY KEY, attributes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mapping_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, audience_ids TEXT NOT NULL,
    members BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS adgroups (adgroup_id TEXT PRIMARY KEY, advertiser_id TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customer_files (
    file_path TEXT PRIMARY KEY, advertiser_id TEXT NOT NULL, calculate_type TEXT NOT NULL,
    file_name TEXT NOT NULL, users INTEGER NOT NULL, members BLOB NOT NULL, created REAL NOT NULL);
"""

AUDIENCE_TYPES = {
    "segment": "Customer File Audience",
    "file": "Customer File Audience",
    "lookalike": "Lookalike Audience",
}


@dataclass
class AudienceAttributes:
    """What the emulator knows of an audience beyond id, owner and name; persisted as one JSON row."""

    kind: str = "segment"  # segment (segment/audience/), file (dmp/custom_audience/create/) or lookalike
    calculate_type: str = "MULTIPLE_TYPES"
    audience_sub_type: str = "NORMAL"
    retention_in_days: int | None = None
    recalculated: float | None = None  # last file create/update/refresh: is_valid restarts from here
    lookalike_spec: dict[str, Any] | None = None
    lookalike_size: int = 0
    shared_with: list[str] = field(default_factory=list)
    #: ad group id -> usage mode ("Include" / "Exclude") for ``dmp/custom_audience/apply/``
    applied_to: dict[str, str] = field(default_factory=dict)


@dataclass
class Audience:
    audience_id: str
    advertiser_id: str
    name: str
    created: float
    members: set[bytes] = field(default_factory=set)
    received: int = 0
    attributes: AudienceAttributes = field(default_factory=AudienceAttributes)

    @property
    def size(self) -> int:
        return self.attributes.lookalike_size if self.attributes.kind == "lookalike" else len(self.members)

    def is_valid(self, valid_after_seconds: float, now: float) -> bool:
        return now - (self.attributes.recalculated or self.created) >= valid_after_seconds

    def details(self, valid_after_seconds: float, now: float, viewer: str | None = None) -> dict:
        """The audience as ``dmp/custom_audience/list/`` and ``get/`` show it to advertiser ``viewer``."""
        attributes = self.attributes
        created = datetime.fromtimestamp(self.created, tz=timezone.utc)
        retention = attributes.retention_in_days or DEFAULT_RETENTION_DAYS
        details = {
            "audience_id": self.audience_id,
            "name": self.name,
            "audience_type": AUDIENCE_TYPES[attributes.kind],
            "calculate_type": attributes.calculate_type,
            "audience_sub_type": attributes.audience_sub_type,
            "cover_num": self.size,
            "is_valid": self.is_valid(valid_after_seconds, now),
            "is_expiring": False,
            "is_creator": viewer is None or viewer == self.advertiser_id,
            "shared": bool(attributes.shared_with),
            "create_time": created.strftime("%Y-%m-%d %H:%M:%S"),
            "expired_time": (created + timedelta(days=retention)).strftime("%Y-%m-%d %H:%M:%S"),
        }
        if attributes.lookalike_spec is not None:
            details["lookalike_spec"] = attributes.lookalike_spec
        return details


@dataclass(frozen=True)
class CustomerFile:
    file_path: str
    advertiser_id: str
    calculate_type: str
    file_name: str
    users: int


class SandboxState:
    """All emulator state; every public method is safe to call from the event loop and admin threads."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # an emulator: survive restarts, not power cuts
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self.audiences: dict[str, Audience] = {}
        self._load()

    def _load(self) -> None:
        for audience_id, advertiser_id, name, created, attributes in self._db.execute(
            "SELECT a.audience_id, a.advertiser_id, a.name, a.created, t.attributes FROM audiences a"
            " LEFT JOIN audience_attributes t USING (audience_id) WHERE a.deleted = 0"
        ):
            audience = Audience(audience_id, advertiser_id, name, created)
            if attributes:
                audience.attributes = AudienceAttributes(**json.loads(attributes))
            self.audiences[audience_id] = audience
        for action, audience_ids, members in self._db.execute(
            "SELECT action, audience_ids, members FROM mapping_log ORDER BY seq"
        ):
            keys = members.split(b"\n") if members else []
            self._apply(action, audience_ids.split(","), keys)

    # --- apps, tokens, auth codes -------------------------------------------------------------

    def seed(self, app_id: str, secret: str, token: str, advertiser_ids: list[str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO apps VALUES (?, ?)", (app_id, secret))
            self._db.execute(
                "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, 0)", (token, app_id, ",".join(advertiser_ids))
            )

    def app_secret_matches(self, app_id: str, secret: str) -> bool:
        row = self._db.execute("SELECT secret FROM apps WHERE app_id = ?", (app_id,)).fetchone()
        return bool(row) and secrets.compare_digest(row[0], secret)

    def token_status(self, token: str | None) -> tuple[str, list[str]]:
        """('missing'|'unknown'|'revoked'|'ok', advertiser ids)."""
        if not token:
            return "missing", []
        row = self._db.execute("SELECT advertiser_ids, revoked FROM tokens WHERE token = ?", (token,)).fetchone()
        if row is None:
            return "unknown", []
        return ("revoked" if row[1] else "ok"), [a for a in row[0].split(",") if a]

    def app_of_token(self, token: str) -> str | None:
        row = self._db.execute("SELECT app_id FROM tokens WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None

    def revoke(self, token: str) -> bool:
        with self._lock:
            return self._db.execute("UPDATE tokens SET revoked = 1 WHERE token = ?", (token,)).rowcount > 0

    def issue_auth_code(self, app_id: str, advertiser_ids: list[str]) -> str:
        code = secrets.token_hex(16)
        with self._lock:
            self._db.execute(
                "INSERT INTO auth_codes VALUES (?, ?, ?, ?, 0)",
                (code, app_id, ",".join(advertiser_ids), time.time()),
            )
        return code

    def redeem_auth_code(self, app_id: str, code: str) -> tuple[str, list[str]] | None:
        """A fresh token for a valid, unused, unexpired code of this app; None otherwise."""
        with self._lock:
            row = self._db.execute(
                "SELECT advertiser_ids, issued, used FROM auth_codes WHERE code = ? AND app_id = ?",
                (code, app_id),
            ).fetchone()
            if row is None or row[2] or time.time() - row[1] > AUTH_CODE_TTL_SECONDS:
                return None
            self._db.execute("UPDATE auth_codes SET used = 1 WHERE code = ?", (code,))
            token = secrets.token_hex(20)
            advertisers = [a for a in row[0].split(",") if a]
            self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, 0)", (token, app_id, row[0]))
            return token, advertisers

    # --- audiences ----------------------------------------------------------------------------

    def audiences_of(self, advertiser_id: str) -> list[Audience]:
        """The advertiser's own audiences, oldest first."""
        with self._lock:
            found = [a for a in self.audiences.values() if a.advertiser_id == advertiser_id]
        return sorted(found, key=lambda a: (a.created, a.audience_id))

    def visible_to(self, advertiser_id: str) -> list[Audience]:
        """Own audiences and those shared with the advertiser, oldest first (what list/get show)."""
        with self._lock:
            found = [
                a
                for a in self.audiences.values()
                if a.advertiser_id == advertiser_id or advertiser_id in a.attributes.shared_with
            ]
        return sorted(found, key=lambda a: (a.created, a.audience_id))

    def create_audience(
        self, advertiser_id: str, name: str, attributes: AudienceAttributes | None = None
    ) -> Audience | None:
        """None when the advertiser already has the maximum number of audiences."""
        with self._lock:
            if len(self.audiences_of(advertiser_id)) >= MAX_AUDIENCES_PER_ADVERTISER:
                return None
            (ever_created,) = self._db.execute("SELECT COUNT(*) FROM audiences").fetchone()
            audience = Audience(
                str(FIRST_AUDIENCE_ID + ever_created),
                advertiser_id,
                name if attributes is not None else name[:MAX_AUDIENCE_NAME_LENGTH],  # the Segment API cuts names
                time.time(),
            )
            self._db.execute(
                "INSERT INTO audiences VALUES (?, ?, ?, ?, 0)",
                (audience.audience_id, advertiser_id, audience.name, audience.created),
            )
            self.audiences[audience.audience_id] = audience
            if attributes is not None:
                audience.attributes = attributes
                self.save_attributes(audience)
            return audience

    def save_attributes(self, audience: Audience) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO audience_attributes VALUES (?, ?)",
                (audience.audience_id, json.dumps(asdict(audience.attributes))),
            )

    def rename_audience(self, audience: Audience, name: str) -> None:
        with self._lock:
            audience.name = name
            self._db.execute("UPDATE audiences SET name = ? WHERE audience_id = ?", (name, audience.audience_id))

    def delete_audience(self, audience_id: str) -> None:
        with self._lock:
            self.audiences.pop(audience_id, None)
            self._db.execute("UPDATE audiences SET deleted = 1 WHERE audience_id = ?", (audience_id,))

    # --- customer files -----------------------------------------------------------------------

    def store_file(self, advertiser_id: str, calculate_type: str, file_name: str, member_keys: list[bytes]) -> str:
        """Keep an uploaded file's digests; returns its ``file_path``."""
        file_path = f"sandbox/{advertiser_id}/{secrets.token_hex(16)}"
        with self._lock:
            self._db.execute(
                "INSERT INTO customer_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    file_path,
                    advertiser_id,
                    calculate_type,
                    file_name,
                    len(member_keys),
                    b"\n".join(member_keys),
                    time.time(),
                ),
            )
        return file_path

    def customer_file(self, file_path: str) -> CustomerFile | None:
        row = self._db.execute(
            "SELECT advertiser_id, calculate_type, file_name, users FROM customer_files WHERE file_path = ?",
            (file_path,),
        ).fetchone()
        return CustomerFile(file_path, *row) if row else None

    def file_members(self, file_paths: list[str]) -> set[bytes]:
        """Every digest of the given files, as one set."""
        keys: set[bytes] = set()
        for file_path in file_paths:
            (members,) = self._db.execute(
                "SELECT members FROM customer_files WHERE file_path = ?", (file_path,)
            ).fetchone()
            if members:
                keys.update(members.split(b"\n"))
        return keys

    # --- ad groups (only what applying audiences needs) ---------------------------------------

    def adgroup(self, adgroup_id: str) -> tuple[str, str] | None:
        """(advertiser id, operation status ENABLE/DISABLE) of a known ad group."""
        row = self._db.execute(
            "SELECT advertiser_id, status FROM adgroups WHERE adgroup_id = ?", (adgroup_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def set_adgroup(self, adgroup_id: str, advertiser_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO adgroups VALUES (?, ?, ?)", (adgroup_id, advertiser_id, status))

    # --- memberships --------------------------------------------------------------------------

    def map_members(self, action: str, audience_ids: list[str], member_keys: list[bytes] | set[bytes]) -> None:
        """Apply and log one membership change: ``add``, ``delete`` or ``replace``."""
        with self._lock:
            self._db.execute(
                "INSERT INTO mapping_log (action, audience_ids, members) VALUES (?, ?, ?)",
                (action, ",".join(audience_ids), b"\n".join(member_keys)),
            )
            self._apply(action, audience_ids, member_keys)

    def map_members_if_size_stays(self, audience: Audience, action: str, member_keys: set[bytes], minimum: int) -> int:
        """Apply ``action`` only if the audience keeps at least ``minimum`` members; the size it would have."""
        with self._lock:
            members = audience.members
            if action == "add":
                size = len(members) + len(member_keys - members)
            elif action == "delete":
                size = len(members - member_keys)
            else:
                size = len(member_keys)
            if size >= minimum:
                self.map_members(action, [audience.audience_id], member_keys)
            return size

    def _apply(self, action: str, audience_ids: list[str], member_keys: list[bytes] | set[bytes]) -> None:
        for audience_id in audience_ids:
            audience = self.audiences.get(audience_id)
            if audience is None:
                continue
            if action == "add":
                audience.members.update(member_keys)
                audience.received += len(member_keys)
            elif action == "replace":
                audience.members = set(member_keys)
                audience.received += len(member_keys)
            else:
                audience.members.difference_update(member_keys)


class RequestCounters:
    """Requests per endpoint and code, and a sliding 1-second window per token for the rate limit."""

    def __init__(self, limit_per_second: int) -> None:
        self.limit = limit_per_second
        self.by_endpoint: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._admitted: dict[str, list[float]] = defaultdict(list)
        self._arrivals: dict[str, list[float]] = defaultdict(list)
        self.peak_arrivals_per_second = 0
        self.peak_admitted_per_second = 0

    def admit(self, token: str, now: float) -> bool:
        """Record an arrival; False when admitting it would exceed the limit in the last second."""
        arrivals = _trim(self._arrivals[token], now)
        arrivals.append(now)
        self.peak_arrivals_per_second = max(self.peak_arrivals_per_second, len(arrivals))
        admitted = _trim(self._admitted[token], now)
        if len(admitted) >= self.limit:
            return False
        admitted.append(now)
        self.peak_admitted_per_second = max(self.peak_admitted_per_second, len(admitted))
        return True

    def record(self, endpoint: str, code: int) -> None:
        self.by_endpoint[endpoint][code] += 1

    def reset(self) -> None:
        self.by_endpoint.clear()
        self._admitted.clear()
        self._arrivals.clear()
        self.peak_arrivals_per_second = self.peak_admitted_per_second = 0


def _trim(window: list[float], now: float) -> list[float]:
    cut = 0
    while cut < len(window) and window[cut] <= now - 1.0:
        cut += 1
    if cut:
        del window[:cut]
    return window
