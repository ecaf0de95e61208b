"""The page's source reader on a real PostgreSQL warehouse: same rows as SQLite, incremental reads included."""

from __future__ import annotations

import json

import psycopg2

from airflow_provider_tiktok.plugins.rows import normalise
from airflow_provider_tiktok.plugins.sources import ResultsSource, parse_sources, read_table
from tests.unit.plugins.factory import COLUMNS, TABLE, result_row


def test_results_table_on_postgres_reads_whole_and_since(postgres_server, monkeypatch):
    rows = [result_row(a, d) for a in range(3) for d in range(4)]
    connection = psycopg2.connect(
        host=postgres_server["host"],
        port=postgres_server["port"],
        user=postgres_server["login"],
        dbname=postgres_server["schema"],
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS marketing")
        cursor.execute(f"DROP TABLE IF EXISTS marketing.{TABLE}")
        cursor.execute(f"CREATE TABLE marketing.{TABLE} ({', '.join(f'{n} {k}' for n, k in COLUMNS.items())})")
        cursor.executemany(
            f"INSERT INTO marketing.{TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            [tuple(row.get(name) for name in COLUMNS) for row in rows],
        )
    connection.close()
    monkeypatch.setenv("AIRFLOW_CONN_DWH", json.dumps({"conn_type": "postgres", **postgres_server}))
    [source] = parse_sources(f"dwh:marketing.{TABLE}")
    assert source == ResultsSource("dwh", f"marketing.{TABLE}")

    read = read_table(source)
    assert sorted((r["map_index"], r["synced"]) for r in read) == sorted((r["map_index"], r["synced"]) for r in rows)
    assert normalise(read[0])["extra"]["duration_seconds"] == 3.5
    since = result_row(0, 3)["updated_at"]
    newer = read_table(source, since=since)
    assert {r["run_id"] for r in newer} == {result_row(0, 3)["run_id"]} and len(newer) == 3
