"""Sync outcome arithmetic: every entered user ends in exactly one of synced, not synced, pending, errored."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SyncMetrics:
    entered: int = 0
    synced: int = 0
    unchanged: int = 0
    pending: int = 0
    not_synced: Counter[str] = field(default_factory=Counter)
    errored: Counter[str] = field(default_factory=Counter)
    invalid_by_field: Counter[str] = field(default_factory=Counter)
    coverage: dict[str, int] = field(default_factory=dict)
    removed: int = 0  # mirror mode: departed users removed; they did not enter, so they stand beside the rest
    removals_pending: int = 0
    removals_errored: int = 0
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    attempts: int = 0
    batches_total: int = 0
    duration_seconds: float = 0.0
    active_seconds: float = 0.0  # first source row read to last acknowledgement
    cpu_seconds: float = 0.0
    time_to_first_request_seconds: float | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    lag_p50_seconds: float | None = None  # freshness: a user's entry to TikTok's acknowledgement
    lag_p95_seconds: float | None = None
    lag_max_seconds: float | None = None

    @property
    def not_synced_total(self) -> int:
        return sum(self.not_synced.values())

    @property
    def errored_total(self) -> int:
        return sum(self.errored.values())

    @property
    def users_per_second(self) -> float:
        seconds = self.active_seconds or self.duration_seconds
        return round(self.synced / seconds, 1) if seconds > 0 else 0.0

    def check_invariant(self) -> None:
        accounted = self.synced + self.unchanged + self.not_synced_total + self.pending + self.errored_total
        if accounted != self.entered or min(self.synced, self.pending, self.unchanged) < 0:
            # Users were lost or counted twice: refuse to report such numbers.
            raise AssertionError(
                f"entered={self.entered} but synced+unchanged+not_synced+pending+errored={accounted} "
                f"({self.synced}+{self.unchanged}+{self.not_synced_total}+{self.pending}+{self.errored_total})"
            )

    def as_dict(self) -> dict[str, Any]:
        """Small JSON-safe summary (the XCom return value)."""
        data = asdict(self)
        data.update(
            not_synced=dict(self.not_synced),
            errored=dict(self.errored),
            invalid_by_field=dict(self.invalid_by_field),
            not_synced_total=self.not_synced_total,
            errored_total=self.errored_total,
            users_per_second=self.users_per_second,
            duration_seconds=round(self.duration_seconds, 3),
            phase_seconds={phase: round(seconds, 3) for phase, seconds in self.phase_seconds.items()},
        )
        return data
