"""Seed a warehouse with synthetic journey-step entrants: ``python -m demo.seed --url sqlite:///w.db``.

Table ``canvas_step_entrants(canvas_id, step_id, user_id, email, phone, idfa, gaid, entered_at)``.
A few percent of values are missing or malformed, some entrants repeat, and good values come in
mixed case and spacing, so every metric of a sync is non-trivial. ``generate_entrants`` also returns
the ground truth (canonical value of every usable field) so tests can compute expected digests
without using the provider's own normalisation.
"""

from __future__ import annotations

import argparse
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import sqlalchemy

TABLE = "canvas_step_entrants"
STEPS = [("winback", "step_1"), ("winback", "step_2"), ("onboarding", "step_1"), ("loyalty", "vip")]
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Truth:
    """Canonical (already normalised) value of each usable field, or None when missing or malformed."""

    email: str | None
    phone: str | None
    idfa: str | None
    gaid: str | None
    email_present: bool
    phone_present: bool
    idfa_present: bool
    gaid_present: bool


def _messy_email(rng: random.Random, canonical: str) -> str:
    local, domain = canonical.split("@")
    styled = rng.choice([canonical, canonical.upper(), local.capitalize() + "@" + domain.upper()])
    return rng.choice(["", " ", "  "]) + styled + rng.choice(["", " ", "\t"])


def _messy_phone(rng: random.Random, canonical: str) -> str:
    national = canonical[2:]
    return rng.choice(
        [
            canonical,
            f"+1 ({national[:3]}) {national[3:6]}-{national[6:]}",
            f"{national[:3]}-{national[3:6]}-{national[6:]}",
            f" 1{national} ",
        ]
    )


def generate_entrants(
    count: int = 50_000, seed: int = 7, days: int = 7, start: datetime = START
) -> tuple[pd.DataFrame, list[Truth]]:
    rng = random.Random(seed)
    rows, truths = [], []
    for number in range(count):
        if rows and rng.random() < 0.01:  # the same user entered the same step again
            repeated = len(rows) - 1 - rng.randrange(min(len(rows), 50))
            rows.append(dict(rows[repeated]))
            truths.append(truths[repeated])
            continue
        canvas_id, step_id = rng.choice(STEPS)
        fields: dict[str, str | None] = {}
        canon: dict[str, str | None] = {}
        roll = rng.random()
        email = f"user{number}.{rng.choice(['x', 'y', 'z'])}@example.com"
        if roll < 0.04:
            fields["email"], canon["email"] = rng.choice([None, ""]), None
        elif roll < 0.07:
            fields["email"], canon["email"] = f"user{number}example.com", None
        else:
            fields["email"], canon["email"] = _messy_email(rng, email), email
        phone = f"+1{rng.randrange(201, 989)}{rng.randrange(200, 999)}{rng.randrange(0, 9999):04d}"
        roll = rng.random()
        if roll < 0.3:
            fields["phone"], canon["phone"] = None, None
        elif roll < 0.33:
            fields["phone"], canon["phone"] = str(rng.randrange(100, 99999)), None
        else:
            fields["phone"], canon["phone"] = _messy_phone(rng, phone), phone
        for device, share in (("idfa", 0.4), ("gaid", 0.3)):
            value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            roll = rng.random()
            if roll < 1 - share:
                fields[device], canon[device] = None, None
            elif roll < 1 - share + 0.02:
                fields[device], canon[device] = value.replace("-", "")[:30], None
            else:
                fields[device], canon[device] = rng.choice([value, value.upper()]), value
        rows.append(
            {
                "canvas_id": canvas_id,
                "step_id": step_id,
                "user_id": f"u{number:07d}",
                **fields,
                "entered_at": (start + timedelta(seconds=rng.randrange(days * 86400))).isoformat(),
            }
        )
        truths.append(
            Truth(
                canon["email"],
                canon["phone"],
                canon["idfa"],
                canon["gaid"],
                *(bool(fields[f] and str(fields[f]).strip()) for f in ("email", "phone", "idfa", "gaid")),
            )
        )
    return pd.DataFrame(rows), truths


def loyalty_members(entrants: pd.DataFrame, lapsed_share: float = 0.2, seed: int = 7) -> pd.DataFrame:
    """Users who reached the loyalty VIP step; a share of them has since lapsed."""
    vip = entrants[(entrants.canvas_id == "loyalty") & (entrants.step_id == "vip")]
    members = vip.drop_duplicates("user_id")[["user_id", "email", "phone", "idfa", "gaid"]].copy()
    rng = random.Random(seed)
    members["status"] = ["lapsed" if rng.random() < lapsed_share else "active" for _ in range(len(members))]
    return members


def seed(url: str, count: int = 50_000, seed_value: int = 7, days: int = 7, start: datetime = START) -> pd.DataFrame:
    """Write ``canvas_step_entrants`` and ``loyalty_members`` (replacing them)."""
    frame, _ = generate_entrants(count, seed_value, days, start)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        frame.to_sql(TABLE, connection, if_exists="replace", index=False, chunksize=10_000)
        loyalty_members(frame, seed=seed_value).to_sql("loyalty_members", connection, if_exists="replace", index=False)
    engine.dispose()
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. sqlite:///warehouse.db")
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=7, help="entrants spread over this many days from 2026-11-01")
    args = parser.parse_args(argv)
    frame = seed(args.url, args.count, args.seed, args.days)
    print(f"seeded {len(frame):,} entrants into {TABLE}")


if __name__ == "__main__":
    main()
