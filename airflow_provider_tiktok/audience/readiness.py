"""When is an audience ready? The sensor's conditions as one pure function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AudienceConditions:
    require_valid: bool = True
    min_size: int | None = None
    fail_if_missing: bool = False
    fail_if_expiring: bool = False


@dataclass(frozen=True)
class Readiness:
    met: bool
    failure: str | None = None  # set when waiting longer cannot help
    waiting_for: str = ""
    summary: dict[str, Any] | None = None  # the audience's facts, once ready


def evaluate(audience: dict[str, Any] | None, conditions: AudienceConditions, label: str) -> Readiness:
    if audience is None:
        if conditions.fail_if_missing:
            return Readiness(False, failure=f"audience {label} does not exist")
        return Readiness(False, waiting_for=f"audience {label} to exist")
    if conditions.fail_if_expiring and audience.get("is_expiring"):
        return Readiness(False, failure=f"audience {label} is expiring (expires {audience.get('expired_time')})")
    if conditions.require_valid and not audience.get("is_valid"):
        return Readiness(False, waiting_for=f"audience {label} to finish calculating (is_valid=false)")
    size = int(audience.get("cover_num") or 0)
    if conditions.min_size is not None and size < conditions.min_size:
        return Readiness(False, waiting_for=f"audience {label} to reach {conditions.min_size} (size {size})")
    return Readiness(True, summary=audience_summary(audience))


def audience_summary(audience: dict[str, Any]) -> dict[str, Any]:
    """What goes to XCom: small and free of anything but the audience's own facts."""
    return {
        "audience_id": str(audience.get("audience_id")),
        "name": audience.get("name"),
        "size": int(audience.get("cover_num") or 0),
        "is_valid": bool(audience.get("is_valid")),
        "is_expiring": bool(audience.get("is_expiring")),
        "expired_time": audience.get("expired_time"),
    }


def audience_label(audience_id: str | None, audience_name: str | None) -> str:
    """How messages name the audience: its id, else its quoted name."""
    return str(audience_id) if audience_id else repr(audience_name)
