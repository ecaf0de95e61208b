"""Shape results-table rows for the "TikTok audiences" page: pure functions, no Airflow, no I/O.

Rows come from ``SELECT *`` on results tables whose columns grow over time, so every reader here takes what
it finds: a missing column is ``None`` (or absent from the page), an unknown numeric column is shown as an
extra figure. Only aggregate figures and the names needed for links are kept; nothing else leaves here.
Selecting (``readable``, ``latest_per_audience``, ``history_of``, ``rows_of_run``) works on raw rows, so only
the few rows a page shows are ``normalise``d: a year of daily runs of hundreds of audiences stays fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from airflow_provider_tiktok.exceptions import PERMISSION_CODES, RATE_LIMIT_CODES, TOKEN_CODES, TRANSIENT_CODES

COUNTS = ("entered", "synced", "not_synced", "pending", "errored", "removed", "unchanged")
ALWAYS_SHOWN = COUNTS[:5]
LABELS = {
    "entered": "Entered",
    "synced": "Synced",
    "not_synced": "Not Synced",
    "pending": "Pending",
    "errored": "Errored",
    "removed": "Removed",
    "unchanged": "Unchanged",
}
TEXT_FIELDS = ("dag_id", "task_id", "run_id", "advertiser_id", "audience_id", "audience_name", "action", "status")
REASON_FIELDS = ("not_synced_by_reason", "errored_by_reason")
TIME_FIELDS = ("first_attempt_at", "updated_at")
# Raw ids and free text never become "extra figures", whatever their type.
NOT_FIGURES = {*TEXT_FIELDS, *REASON_FIELDS, *TIME_FIELDS, *COUNTS, "map_index"}

OAUTH_COMMAND = "python -m airflow_provider_tiktok.oauth"
REASON_ADVICE = {
    "missing_fields": "No usable match field in the row: check the query selects the mapped columns and fills them.",
    "invalid_email": "Malformed e-mail addresses: fix them at the source (they are skipped, not retried).",
    "invalid_phone": "Phones that cannot be made E.164: fix them, or set default_phone_country for national numbers.",
    "invalid_device_id": "IDFA/GAID that are not UUIDs (or the all-zero id): fix them at the source.",
    "missing_user_key": "Rows without a user key: the user_key_column must be filled for every row.",
    "duplicate": "The same user or identity entered twice in this run; counted once. Deduplicate if unexpected.",
}


def advice_for(reason: str) -> str:
    """What to do about one not-synced reason or ``api_error_<code>``."""
    if reason in REASON_ADVICE:
        return REASON_ADVICE[reason]
    text = reason.removeprefix("api_error_")
    code = int(text) if text.isdigit() else None
    if code in TOKEN_CODES:
        return f"TikTok rejected the access token: re-authorise with `{OAUTH_COMMAND}`, then clear the task."
    if code in PERMISSION_CODES:
        return "The token may not use this advertiser or audience: grant access in TikTok Business Center."
    if code in RATE_LIMIT_CODES:
        return "Rate limited: lower max_qps or share the budget with a pool (share_of_budget); retries resume."
    if code in TRANSIENT_CODES or (code is not None and 50000 <= code < 70000):
        return "A TikTok-side error: transient, the task's retries resume where the sync stopped."
    if code is not None:
        return "TikTok refused the request: check the audience still exists and the task's arguments."
    return "See the task's log for details."


def _integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def _figure(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(value)  # Decimal from PostgreSQL, numeric text from SQLite
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _reasons(value: Any) -> dict[str, int]:
    if isinstance(value, Mapping):
        parsed: Any = value
    else:
        try:
            parsed = json.loads(value) if value else {}
        except (TypeError, ValueError):
            return {}
    if not isinstance(parsed, Mapping):
        return {}
    return {str(k): n for k, v in parsed.items() if (n := _integer(v))}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One results row as the page uses it: known fields typed, unknown numeric columns under ``extra``."""
    row: dict[str, Any] = {name: _text(raw.get(name)) for name in (*TEXT_FIELDS, *TIME_FIELDS)}
    row["map_index"] = _integer(raw.get("map_index"))
    row["map_index"] = -1 if row["map_index"] is None else row["map_index"]
    row["counts"] = {name: _integer(raw[name]) for name in COUNTS if name in raw}
    row["not_synced_by_reason"] = _reasons(raw.get("not_synced_by_reason"))
    row["errored_by_reason"] = _reasons(raw.get("errored_by_reason"))
    row["extra"] = {
        name: number
        for name, value in raw.items()
        if name not in NOT_FIGURES and not name.endswith("_id") and (number := _figure(value)) is not None
    }
    return row


def _fast_text(value: Any) -> str:
    return value if value.__class__ is str else (_text(value) or "")


def audience_of(row: Mapping[str, Any]) -> tuple[str, str]:
    """(advertiser, audience id or name): what the page groups by. Works on raw and normalised rows."""
    return (_fast_text(row.get("advertiser_id")), _fast_text(row.get("audience_id") or row.get("audience_name")))


def when(row: Mapping[str, Any]) -> str:
    """When the sync last wrote its row, as ISO text. Works on raw and normalised rows."""
    return _fast_text(row.get("updated_at") or row.get("first_attempt_at"))


def by_audience(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Raw rows grouped by audience, each group oldest first: one pass serves the latest row and the trend."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:  # no per-row objects: allocating 100k tuples here costs more in GC than the work
        grouped.setdefault(audience_of(row), []).append(row)
    for group in grouped.values():
        group.sort(key=when)
    return grouped


def count_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The five columns every table has, plus Removed / Unchanged when a source has them."""
    present = set(ALWAYS_SHOWN)
    for row in rows:
        present.update(row["counts"])
    return [name for name in COUNTS if name in present]


def readable(rows: Iterable[Mapping[str, Any]], dag_ids: set[str]) -> list[Mapping[str, Any]]:
    return [row for row in rows if row.get("dag_id") in dag_ids]


def latest_per_audience(grouped: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """The most recent sync of each audience (from ``by_audience``), ordered by audience name."""
    latest = [group[-1] for group in grouped.values()]
    return sorted(latest, key=lambda r: (_fast_text(r.get("audience_name")).lower(), audience_of(r)))


def history_of(rows: Iterable[Mapping[str, Any]], advertiser: str, audience: str) -> list[Mapping[str, Any]]:
    """Every sync of one audience, oldest first."""
    return sorted((r for r in rows if audience_of(r) == (advertiser, audience)), key=when)


def rows_of_run(
    rows: Iterable[Mapping[str, Any]],
    dag_id: str,
    run_id: str,
    task_id: str | None = None,
    map_index: int | None = None,
) -> list[Mapping[str, Any]]:
    """The syncs of one DAG run, or of one task instance of it."""
    chosen = [
        r
        for r in rows
        if r.get("dag_id") == dag_id
        and r.get("run_id") == run_id
        and (task_id is None or r.get("task_id") == task_id)
        and (map_index is None or r.get("map_index") == map_index)
    ]
    return sorted(chosen, key=lambda r: (r.get("task_id") or "", r.get("map_index", -1)))


def reasons_with_advice(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Not-synced reasons and errored codes, largest first, each with what to do about it."""
    found = [
        {"kind": kind, "reason": reason, "count": count, "advice": advice_for(reason)}
        for kind, field in (("Not Synced", "not_synced_by_reason"), ("Errored", "errored_by_reason"))
        for reason, count in row.get(field, {}).items()
    ]
    return sorted(found, key=lambda item: (-item["count"], item["reason"]))


def task_instance_path(row: Mapping[str, Any]) -> str:
    """Path of the task instance in the Airflow 3 UI."""
    parts = [quote(row.get(name) or "", safe="") for name in ("dag_id", "run_id", "task_id")]
    path = f"/dags/{parts[0]}/runs/{parts[1]}/tasks/{parts[2]}"
    map_index = row.get("map_index", -1)
    return f"{path}/mapped/{map_index}" if map_index is not None and map_index >= 0 else path


def public(row: Mapping[str, Any], size: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A row as the JSON endpoints return it."""
    return {
        **{name: row.get(name) for name in (*TEXT_FIELDS, *TIME_FIELDS, "map_index")},
        "counts": dict(row.get("counts", {})),
        "reasons": reasons_with_advice(row),
        "extra": dict(row.get("extra", {})),
        "task_instance_path": task_instance_path(row),
        "tiktok": dict(size) if size else None,
    }


def series(history: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, list[int]]:
    """Per metric, its value in each normalised run of ``history`` (missing values as 0)."""
    return {name: [row["counts"].get(name) or 0 for row in history] for name in columns}


def recent_values(
    grouped: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]], column: str, runs: int
) -> dict[tuple[str, str], list[int]]:
    """Per audience (from ``by_audience``), ``column`` of its last ``runs`` rows, oldest first (sparklines)."""
    return {key: [_integer(row.get(column)) or 0 for row in group[-runs:]] for key, group in grouped.items()}
