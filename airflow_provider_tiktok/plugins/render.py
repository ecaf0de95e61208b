"""HTML of the "TikTok audiences" pages: server-rendered, escaped, with an inline SVG chart (no JS framework, no CDN).

Pure functions of already-shaped rows (see ``rows.py``); ``prefix`` is where the plugin app is mounted and
``ui_root`` where the Airflow UI lives, so links work under any base URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from airflow_provider_tiktok.links.tiktok import audience_url
from airflow_provider_tiktok.plugins.rows import (
    LABELS,
    audience_of,
    reasons_with_advice,
    series,
    task_instance_path,
    when,
)

COLOURS = {
    "entered": "#64748b",
    "synced": "#16a34a",
    "not_synced": "#d97706",
    "pending": "#2563eb",
    "errored": "#dc2626",
    "removed": "#7c3aed",
    "unchanged": "#0891b2",
}
STATUS_CLASS = {"finished": "ok", "pending": "warn", "failed": "bad", "dry_run": "muted"}


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _short_time(value: str | None) -> str:
    return (value or "")[:16].replace("T", " ")


def page(title: str, body: str, prefix: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f'<link rel=stylesheet href="{escape(prefix)}/static/audiences.css">'
        f'<script defer src="{escape(prefix)}/static/audiences.js"></script>'
        f"</head><body data-prefix='{escape(prefix)}'>{body}</body></html>"
    )


def notices(errors: Sequence[str]) -> str:
    return "".join(f'<p class="notice">{escape(message)}</p>' for message in errors)


def status_badge(status: str | None) -> str:
    return f'<span class="badge {STATUS_CLASS.get(status or "", "muted")}">{escape(status or "unknown")}</span>'


def size_cells(size: Mapping[str, Any] | None, key: tuple[str, str]) -> str:
    """TikTok's figures for the audience, or a placeholder the page's script fills in when they arrive."""
    data_key = escape("/".join(key))
    if not size:
        return f'<td class=num data-size="{data_key}"><span class=muted>fetching…</span></td><td></td>'
    if size.get("error"):
        return f'<td class=num data-size="{data_key}"><span class=muted>{escape(size["error"])}</span></td><td></td>'
    validity = "valid" if size.get("is_valid") else "calculating"
    if size.get("is_expiring"):
        validity += ", expiring"
    css = "ok" if size.get("is_valid") and not size.get("is_expiring") else "warn"
    return (
        f'<td class=num data-size="{data_key}">{_number(size.get("cover_num"))}</td>'
        f'<td><span class="badge {css}">{escape(validity)}</span></td>'
    )


def _airflow_link(row: Mapping[str, Any], ui_root: str, text: str) -> str:
    path = ui_root + task_instance_path(row)
    return f'<a href="{escape(path)}" data-airflow-path>{escape(text)}</a>'


def _ads_manager_link(row: Mapping[str, Any], separator: str = "") -> str:
    if not (row.get("advertiser_id") and row.get("audience_id")):
        return ""
    url = audience_url(row["advertiser_id"], row["audience_id"])
    return f'{separator}<a href="{escape(url)}" target=_blank rel="noopener noreferrer">Ads Manager ↗</a>'


def _audience_href(prefix: str, row: Mapping[str, Any]) -> str:
    advertiser, audience = audience_of(row)
    return f"{prefix}/audience?{urlencode({'advertiser': advertiser, 'audience': audience})}"


def sparkline(values: Sequence[int], colour: str = COLOURS["synced"], width: int = 96, height: int = 22) -> str:
    if len(values) < 2:
        return ""
    top = max(values) or 1
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))
    return (
        f'<svg class=spark width={width} height={height} viewBox="0 0 {width} {height}" aria-hidden=true>'
        f'<polyline fill=none stroke="{colour}" stroke-width=1.5 points="{points}"/></svg>'
    )


def overview(
    latest: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    sizes: Mapping[tuple[str, str], Mapping[str, Any] | None],
    recent_synced: Mapping[tuple[str, str], Sequence[int]],
    prefix: str,
    ui_root: str,
    errors: Sequence[str] = (),
) -> str:
    """One row per audience: its latest sync, TikTok's size and validity, and where to go next."""
    head = "".join(f"<th class=num>{LABELS[c]}</th>" for c in columns)
    lines = []
    for row in latest:
        key = audience_of(row)
        counts = "".join(f"<td class=num>{_number(row['counts'].get(c))}</td>" for c in columns)
        name = row.get("audience_name") or row.get("audience_id") or "(unnamed)"
        lines.append(
            "<tr>"
            f'<td><a href="{escape(_audience_href(prefix, row))}">{escape(name)}</a>'
            f"<div class=sub>{escape(row.get('dag_id') or '')} · {escape(row.get('action') or '')}</div></td>"
            f"<td>{status_badge(row.get('status'))}</td>"
            f"<td class=nowrap>{escape(_short_time(when(row)))}</td>"
            f"{counts}"
            f"<td>{sparkline(recent_synced.get(key, ()))}</td>"
            f"{size_cells(sizes.get(key), key)}"
            f"<td class=links>{_airflow_link(row, ui_root, 'Task')}{_ads_manager_link(row)}</td>"
            "</tr>"
        )
    table = (
        "<table class=grid><thead><tr><th>Audience</th><th>Status</th><th>Latest sync (UTC)</th>"
        f"{head}<th>Synced, last runs</th><th class=num>TikTok size</th><th>Validity</th><th></th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
        if lines
        else "<p class=empty>No audience syncs you may read yet.</p>"
    )
    return page(
        "TikTok audiences",
        f"<header><h1>TikTok audiences</h1><p class=sub>{len(latest)} audiences · latest sync of each</p></header>"
        f"{notices(errors)}{table}",
        prefix,
    )


def chart(history: Sequence[Mapping[str, Any]], columns: Sequence[str], width: int = 960, height: int = 260) -> str:
    """Each metric across runs, as one inline SVG with gridlines, a legend and first/last dates."""
    if not history:
        return ""
    values = series(history, columns)
    top = max((max(v) for v in values.values() if v), default=0) or 1
    left, right, upper, lower = 64, 12, 12, 28
    plot_w, plot_h = width - left - right, height - upper - lower
    step = plot_w / max(len(history) - 1, 1)

    def y(value: float) -> float:
        return upper + plot_h - (value / top) * plot_h

    grid = "".join(
        f'<line x1={left} x2={width - right} y1="{y(top * i / 4):.1f}" y2="{y(top * i / 4):.1f}" class=gridline />'
        f'<text x={left - 6} y="{y(top * i / 4) + 4:.1f}" text-anchor=end>{int(top * i / 4):,}</text>'
        for i in range(5)
    )
    lines = []
    for name, points in values.items():
        coords = " ".join(f"{left + i * step:.1f},{y(v):.1f}" for i, v in enumerate(points))
        if len(points) == 1:
            lines.append(f'<circle cx={left} cy="{y(points[0]):.1f}" r=3 fill="{COLOURS[name]}"/>')
        else:
            lines.append(f'<polyline fill=none stroke="{COLOURS[name]}" stroke-width=1.8 points="{coords}"/>')
    dates = (
        f"<text x={left} y={height - 8}>{escape(_short_time(when(history[0]))[:10])}</text>"
        f"<text x={width - right} y={height - 8} text-anchor=end>{escape(_short_time(when(history[-1]))[:10])}</text>"
    )
    legend = "".join(f'<span><i style="background:{COLOURS[name]}"></i>{LABELS[name]}</span>' for name in values)
    return (
        f'<div class=legend>{legend}</div><svg class=chart viewBox="0 0 {width} {height}" role=img '
        f'aria-label="Metrics across {len(history)} runs">{grid}{"".join(lines)}{dates}</svg>'
    )


def reasons_table(row: Mapping[str, Any]) -> str:
    items = reasons_with_advice(row)
    if not items:
        return "<p class=empty>Every user was synced: nothing to fix.</p>"
    body = "".join(
        f"<tr><td>{escape(i['kind'])}</td><td><code>{escape(i['reason'])}</code></td>"
        f"<td class=num>{i['count']:,}</td><td>{escape(i['advice'])}</td></tr>"
        for i in items
    )
    return (
        "<table class=grid><thead><tr><th>Bucket</th><th>Reason</th><th class=num>Users</th>"
        f"<th>What to do</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _figures(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    cards = "".join(
        f'<div class=card><div class=label>{LABELS[c]}</div><div class=value style="color:{COLOURS[c]}">'
        f"{_number(row['counts'].get(c))}</div></div>"
        for c in columns
    )
    extra = "".join(
        f"<span><b>{escape(name.replace('_', ' '))}</b> {value:,.6g}</span>" for name, value in row["extra"].items()
    )
    return f"<div class=cards>{cards}</div>" + (f"<p class=extra>{extra}</p>" if extra else "")


def audience_page(
    history: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    size: Mapping[str, Any] | None,
    prefix: str,
    ui_root: str,
    runs_shown: int = 60,
) -> str:
    """One audience: latest figures, the metrics across runs, reasons with advice, and the recent runs."""
    latest = history[-1]
    name = latest.get("audience_name") or latest.get("audience_id") or "(unnamed)"
    key = audience_of(latest)
    runs = "".join(
        f"<tr><td class=nowrap>{escape(_short_time(when(r)))}</td><td>{status_badge(r.get('status'))}</td>"
        + "".join(f"<td class=num>{_number(r['counts'].get(c))}</td>" for c in columns)
        + f"<td>{_airflow_link(r, ui_root, r.get('run_id') or '')}</td></tr>"
        for r in reversed(history[-runs_shown:])
    )
    size_row = f"<tr><th>TikTok size</th>{size_cells(size, key)}</tr>"
    size_table = f'<table class="grid compact"><tbody>{size_row}</tbody></table>'
    body = (
        f'<header><a class=back href="{escape(prefix)}/audiences">← All audiences</a><h1>{escape(name)}</h1>'
        f"<p class=sub>{status_badge(latest.get('status'))} latest sync {escape(_short_time(when(latest)))} UTC · "
        f"{escape(latest.get('dag_id') or '')} · {_airflow_link(latest, ui_root, 'Task')}"
        f"{_ads_manager_link(latest, ' · ')}"
        f"</p></header>{_figures(latest, columns)}{size_table}"
        f"<h2>Across {len(history)} runs</h2>{chart(history, columns)}"
        f"<h2>Not synced and errored, latest sync</h2>{reasons_table(latest)}"
        f"<h2>Recent runs</h2><table class=grid><thead><tr><th>When (UTC)</th><th>Status</th>"
        + "".join(f"<th class=num>{LABELS[c]}</th>" for c in columns)
        + f"<th>Run</th></tr></thead><tbody>{runs}</tbody></table>"
    )
    return page(f"{name} · TikTok audience", body, prefix)


def run_page(
    run_rows: Sequence[Mapping[str, Any]], columns: Sequence[str], dag_id: str, run_id: str, prefix: str, ui_root: str
) -> str:
    """The syncs of one DAG run (or task instance): the same numbers, with reasons and advice."""
    if not run_rows:
        body = "<p class=empty>No TikTok audience sync wrote results for this run.</p>"
    else:
        body = "".join(
            f'<section><h2><a href="{escape(_audience_href(prefix, r))}">'
            f"{escape(r.get('audience_name') or r.get('audience_id') or '(unnamed)')}</a> "
            f"{status_badge(r.get('status'))}"
            f"</h2><p class=sub>{escape(r.get('task_id') or '')}"
            f"{'' if r.get('map_index', -1) < 0 else ' [' + str(r['map_index']) + ']'} · "
            f"{escape(_short_time(when(r)))} UTC · {_airflow_link(r, ui_root, 'Task')}{_ads_manager_link(r, ' · ')}</p>"
            f"{_figures(r, columns)}{reasons_table(r)}</section>"
            for r in run_rows
        )
    header = f"<header><h1>TikTok syncs of this run</h1><p class=sub>{escape(dag_id)} · {escape(run_id)}</p></header>"
    return page(f"TikTok syncs · {run_id}", header + body, prefix)
