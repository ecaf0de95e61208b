"""Source reads: SQLite through its own cursor (mixed-type columns included), parameters bound by name."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pandas as pd
import pyarrow as pa
import pytest

from airflow_provider_tiktok.exceptions import TikTokWarehouseError
from airflow_provider_tiktok.warehouse import TableSpec, Warehouse, _dollar_parameters


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE entrants (user_id, phone, note)")
        rows = [(i, 6505550000 + i, "ok") for i in range(2500)]
        rows += [(2500, "+1 650 555 0000", None), (2501.0, 6505550002.0, 1.5), ("u-9", b"\xff\xfe", "x")]
        db.executemany("INSERT INTO entrants VALUES (?, ?, ?)", rows)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return Warehouse("warehouse")


QUERY = "SELECT user_id, phone, note FROM entrants WHERE rowid > :after ORDER BY rowid"


def test_sqlite_reads_stream_chunks_bind_named_parameters_and_keep_each_cells_type(warehouse):
    chunks = list(warehouse.read_chunks(QUERY, 1000, {"after": 100}))
    assert [len(c) for c in chunks] == [1000, 1000, 403]
    tail = chunks[-1].tail(3).to_dict("records")
    assert [r["user_id"] for r in tail] == [2500, 2501.0, "u-9"]  # one column, three types: no error
    assert [r["phone"] for r in tail] == ["+1 650 555 0000", 6505550002.0, b"\xff\xfe"]


def test_the_cursor_and_sqlalchemy_paths_read_the_same_rows(warehouse):
    ours = next(iter(warehouse.read_chunks(QUERY, 5000, {"after": 0})))
    classic = next(iter(warehouse._read_sqlalchemy(QUERY, 5000, {"after": 0})))
    assert len(ours) == len(classic) == 2503
    assert ours.head(2500).to_dict("records") == classic.head(2500).to_dict("records")


def test_named_parameters_become_postgres_positions_once_each():
    sql, values = _dollar_parameters(
        "SELECT * FROM t WHERE d >= :start AND d < :end AND s = :start", {"start": 1, "end": 2}
    )
    assert sql == "SELECT * FROM t WHERE d >= $1 AND d < $2 AND s = $1" and values == (1, 2)


def test_a_read_started_on_one_thread_goes_on_on_another(warehouse):
    """The task's thread reads the first chunk (launch checks); the staging thread reads the rest."""
    import threading

    chunks = warehouse.read_chunks(QUERY, 1000, {"after": 0})
    sizes = [len(next(chunks))]
    reader = threading.Thread(target=lambda: sizes.extend(len(c) for c in chunks))
    reader.start()
    reader.join()
    assert sizes == [1000, 1000, 503]


@pytest.mark.parametrize("ending", ["-- newest first", ";\n"])
def test_sqlite_reads_only_the_columns_a_sync_uses_in_the_querys_own_order(warehouse, ending):
    key = 'user_id AS "key ""quoted"""'
    query = f"SELECT *, {key} FROM entrants WHERE rowid > :after ORDER BY rowid DESC {ending}"
    narrowed = pd.concat(warehouse.read_chunks(query, 1000, {"after": 10}, ["phone", 'key "quoted"', "phone"]))
    whole = pd.concat(warehouse.read_chunks(query, 1000, {"after": 10}))
    assert list(narrowed.columns) == ["phone", 'key "quoted"']
    assert list(whole.columns) == ["user_id", "phone", "note", 'key "quoted"']
    assert narrowed.to_dict("records") == whole[["phone", 'key "quoted"']].to_dict("records")
    assert narrowed["phone"].iloc[0] == b"\xff\xfe" and len(narrowed) == 2493  # newest first, cells as stored


@pytest.mark.parametrize(
    ("query", "columns", "read"),
    [
        ("SELECT user_id, phone, note FROM entrants", ["user_id", "email"], 3),  # a column missing
        ("SELECT user_id, phone AS user_id, note FROM entrants", ["user_id"], 3),  # a name twice
        ("PRAGMA table_info(entrants)", ["name"], 6),  # no subquery possible
        ("SELECT user_id, phone FROM entrants; -- two columns", ["phone"], 2),  # what follows ";" is not ours
    ],
)
def test_a_query_that_cannot_be_narrowed_is_read_as_written(warehouse, query, columns, read):
    """The caller's column check then names what is missing, as it always did."""
    assert len(next(iter(warehouse.read_chunks(query, 5000, None, columns))).columns) == read


KEYED = pa.schema([("user_key", pa.string()), ("fingerprint", pa.int64())])
AWKWARD_KEYS = ["a", "b'quote", 'c"dq', "d\\back", "e\nnew line", "f\u00e9\u4e2d", "g\ttab", "h", "i,comma", "j]"]


def test_keyed_rows_cross_in_json_pages_exactly_as_written(warehouse):
    rows = [("7001", key, [2**63 - 1, -(2**63), None, 0][i % 4]) for i, key in enumerate(AWKWARD_KEYS)]
    warehouse.execute(("CREATE TABLE keyed (owner TEXT, user_key TEXT PRIMARY KEY, fingerprint BIGINT)", ()))
    warehouse.execute_many("INSERT INTO keyed VALUES (?, ?, ?)", [*rows, ("7002", "other owner", 5)])
    for page_rows in (3, 5, 100):  # pages ending mid-way, exactly at the end, and one page
        table = warehouse.read_in_key_order("keyed", "owner = ?", ("7001",), KEYED, page_rows=page_rows)
        assert table.schema == KEYED
        assert sorted(zip(*table.to_pydict().values(), strict=True)) == sorted(r[1:] for r in rows)
    assert warehouse.read_in_key_order("keyed", "owner = ?", ("none",), KEYED).num_rows == 0


def test_a_clustered_table_keeps_its_rows_in_key_order_on_sqlite(warehouse, tmp_path):
    spec = TableSpec({"owner": "TEXT NOT NULL", "user_key": "TEXT NOT NULL", "n": "BIGINT"}, ("owner", "user_key"))
    warehouse.ensure_table("plain", spec, "table")
    warehouse.ensure_table("clustered", replace(spec, clustered=True), "table")
    warehouse.ensure_table("clustered", replace(spec, clustered=True), "table")  # found as it is
    with sqlite3.connect(tmp_path / "w.db") as db:
        ddl = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert ddl["clustered"].endswith("WITHOUT ROWID") and not ddl["plain"].endswith("WITHOUT ROWID")
    warehouse.execute_many("INSERT INTO clustered VALUES (?, ?, ?)", [("7001", "b", 2), ("7001", "a", 1)])
    assert warehouse.query("SELECT user_key FROM clustered") == [("a",), ("b",)]


def test_keyed_pages_hold_to_a_where_with_or_and_refuse_an_empty_page(warehouse):
    warehouse.execute(("CREATE TABLE keyed (owner TEXT, user_key TEXT PRIMARY KEY, fingerprint BIGINT)", ()))
    rows = [("a", "k1", 1), ("b", "k2", 2), ("a", "k3", 3), ("c", "k4", 4), ("b", "k5", 5)]
    warehouse.execute_many("INSERT INTO keyed VALUES (?, ?, ?)", rows)
    table = warehouse.read_in_key_order("keyed", "owner = ? OR owner = ?", ("a", "b"), KEYED, page_rows=2)
    assert table.column("user_key").to_pylist() == ["k1", "k2", "k3", "k5"]  # each once, and it ends
    with pytest.raises(ValueError, match="page_rows"):
        warehouse.read_in_key_order("keyed", "owner = ?", ("a",), KEYED, page_rows=0)


@pytest.mark.parametrize(
    ("wording", "falls_back"),
    [
        ("OperationalError: no such function: json_object", True),  # SQLite built without JSON
        ("UndefinedFunction: function json_build_object(unknown, text) does not exist", True),
        ("OperationalError: no such table: keyed", False),
    ],
)
def test_a_database_without_the_json_functions_is_read_row_by_row(warehouse, monkeypatch, wording, falls_back):
    warehouse.execute(("CREATE TABLE keyed (owner TEXT, user_key TEXT PRIMARY KEY, fingerprint BIGINT)", ()))
    warehouse.execute_many("INSERT INTO keyed VALUES (?, ?, ?)", [("a", "k1", 1), ("a", "k2", None)])

    def refused(*args) -> None:
        raise TikTokWarehouseError(f"Warehouse 'warehouse': {wording}")

    monkeypatch.setattr(warehouse, "_read_json_lines", refused)
    if not falls_back:
        with pytest.raises(TikTokWarehouseError, match="no such table"):
            warehouse.read_in_key_order("keyed", "owner = ?", ("a",), KEYED)
        return
    table = warehouse.read_in_key_order("keyed", "owner = ?", ("a",), KEYED)
    assert sorted(zip(*table.to_pydict().values(), strict=True)) == [("k1", 1), ("k2", None)]
