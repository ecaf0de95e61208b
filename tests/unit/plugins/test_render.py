"""The pages' HTML: escaped names, one chart line per metric, placeholders while TikTok has not answered."""

from __future__ import annotations

import re

from airflow_provider_tiktok.plugins import render
from airflow_provider_tiktok.plugins.rows import audience_of, count_columns, normalise
from tests.unit.plugins.factory import result_row


def test_names_from_the_table_are_escaped_everywhere():
    row = normalise({**result_row(1, 0), "audience_name": "<script>alert(1)</script>", "task_id": '"><img src=x>'})
    html = render.overview([row], count_columns([row]), {}, {}, "/tiktok", "")
    html += render.run_page([row], count_columns([row]), "d", "r", "/tiktok", "")
    assert "<script>alert" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_chart_draws_one_line_per_metric_across_all_runs():
    history = [normalise(result_row(1, day)) for day in range(30)]
    svg = render.chart(history, count_columns(history))
    lines = re.findall(r'<polyline[^>]*points="([^"]+)"', svg)
    assert len(lines) == 7 and all(len(points.split()) == 30 for points in lines)


def test_sizes_show_a_placeholder_until_tiktok_answers_then_size_and_validity():
    row = normalise(result_row(1, 0))
    key = audience_of(row)
    assert "fetching…" in render.size_cells(None, key)
    known = render.size_cells({"cover_num": 12345, "is_valid": True, "is_expiring": True}, key)
    assert "12,345" in known and "valid, expiring" in known
