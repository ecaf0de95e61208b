"""The one place that talks to a warehouse connection: connections, dialect differences, streamed reads,
table definitions checked before use, and driver errors turned into one scrubbed line.

Works with any common-sql connection (SQLite and Postgres tested). Table names are validated
identifiers; values always travel as bound parameters. What the tables hold is defined by their owners
(``sync/ledger.py``, ``sync/results.py``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json
import sqlalchemy
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook

from airflow_provider_tiktok.audience.identifiers import scrub_identifiers
from airflow_provider_tiktok.exceptions import TikTokConfigurationError, TikTokError, TikTokWarehouseError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: Column type written as ``BLOB`` in a table definition; Postgres calls it ``BYTEA``.
BLOB = "BLOB"


def check_identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name or ""):
        raise TikTokConfigurationError(f"{what} {name!r} is not a plain table name (letters, digits, _, schema.)")
    return name


@dataclass(frozen=True)
class TableSpec:
    """A table's columns (name -> SQL type) and primary key: its DDL, its rows and its check come from this."""

    columns: Mapping[str, str]
    key: tuple[str, ...]
    unique: bool = True  # False: the key names whose rows they are, without a PRIMARY KEY
    #: Rows kept in key order (SQLite: ``WITHOUT ROWID``), for small rows read and changed by key: a change
    #: then writes one b-tree page, not a table page and an index page.
    clustered: bool = False

    @property
    def names(self) -> list[str]:
        return list(self.columns)


def one_line_error(err: BaseException) -> str:
    """The first line of a driver's error, with any value it echoed that looks like an identifier blanked."""
    text = str(err).strip()
    first = scrub_identifiers(text.splitlines()[0])[:300] if text else "no message"
    return f"{type(err).__name__}: {first}"


@contextmanager
def driver_errors(conn_id: str) -> Iterator[None]:
    """A warehouse driver's error as one retryable line (an outage may pass); ours pass through as they are."""
    try:
        yield
    except TikTokError:
        raise
    except Exception as err:  # every driver (sqlite3, psycopg, ...) has its own exception types
        error = TikTokWarehouseError(f"Warehouse {conn_id!r}: {one_line_error(err)}")
        error.integrity = any(kind.__name__ == "IntegrityError" for kind in type(err).__mro__)
        raise error from None


class Warehouse:
    def __init__(self, conn_id: str) -> None:
        with driver_errors(conn_id):
            hook = BaseHook.get_connection(conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise TikTokConfigurationError(
                f"Connection {conn_id!r} is not a SQL (common-sql) connection; got {type(hook).__name__}."
            )
        self.conn_id = conn_id
        self.hook = hook
        self.dialect = hook.dialect_name
        self.placeholder = hook.placeholder
        self._shared = threading.local()
        if self.dialect == "sqlite":
            # Staging writes the ledger while the source query is still streaming from the same file;
            # in SQLite's default journal mode that open read would lock every write out.
            self.query("PRAGMA journal_mode=WAL")

    def placeholders(self, count: int) -> str:
        return ", ".join([self.placeholder] * count)

    # --- source ------------------------------------------------------------------------------

    def read_chunks(
        self,
        sql: str,
        chunk_size: int,
        parameters: Mapping[str, Any] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pd.DataFrame]:
        """Stream a query in DataFrame chunks, by the fastest reader this warehouse allows: Arrow-native ADBC
        on PostgreSQL, the driver's own cursor on SQLite, SQLAlchemy with a server-side cursor elsewhere.
        ``:name`` placeholders work the same on every path. ``columns``: the ones the caller uses; a reader
        that pays per cell (SQLite's) reads only those when the query has them all."""
        if self.dialect == "sqlite":
            # Not ADBC: its driver carries its own copy of SQLite, and two copies of SQLite in one process
            # release each other's file locks (a "disk I/O error" while the ledger is written).
            yield from self._read_cursor(sql, chunk_size, parameters, columns)
        elif self.dialect.startswith("postgres") and _has_adbc_postgres():
            yield from self._read_adbc_postgres(sql, chunk_size, parameters)
        else:
            yield from self._read_sqlalchemy(sql, chunk_size, parameters)

    def _read_sqlalchemy(
        self, sql: str, chunk_size: int, parameters: Mapping[str, Any] | None
    ) -> Iterator[pd.DataFrame]:
        engine = self.hook.get_sqlalchemy_engine()
        with engine.connect().execution_options(stream_results=True) as connection:
            yield from pd.read_sql(
                sqlalchemy.text(sql), connection, params=dict(parameters or {}), chunksize=chunk_size
            )

    def _read_cursor(
        self, sql: str, chunk_size: int, parameters: Mapping[str, Any] | None, columns: Sequence[str] | None
    ) -> Iterator[pd.DataFrame]:
        """SQLite binds ``:name`` itself; cells keep their Python types (the identifier core reads any)."""
        import sqlite3

        # The hook's own URI, but readable from the staging thread that goes on with the chunks the task's
        # thread started (one reader at a time, so the driver's same-thread check can be lifted).
        uri = self.hook.get_uri().replace("sqlite:///", "file:")
        with closing(sqlite3.connect(uri, uri=True, check_same_thread=False)) as conn, closing(conn.cursor()) as cursor:
            values = dict(parameters or {})
            cursor.execute(_only_columns(cursor, sql, values, columns), values)
            names = [column[0] for column in cursor.description]
            while rows := cursor.fetchmany(chunk_size):
                yield _frame(rows, names)

    def _read_adbc_postgres(
        self, sql: str, chunk_size: int, parameters: Mapping[str, Any] | None
    ) -> Iterator[pd.DataFrame]:
        import adbc_driver_postgresql.dbapi

        uri = self.hook.get_connection(self.conn_id).get_uri()
        uri = uri.replace("postgres://", "postgresql://", 1).split("?")[0]
        query, values = _dollar_parameters(sql.strip().rstrip(";"), parameters)
        with adbc_driver_postgresql.dbapi.connect(uri) as connection, connection.cursor() as cursor:
            cursor.execute(query, values or None)
            pending: list[pa.RecordBatch] = []
            rows = 0
            for batch in cursor.fetch_record_batch():
                pending.append(batch)
                rows += batch.num_rows
                if rows >= chunk_size:
                    yield pa.Table.from_batches(pending).to_pandas()
                    pending, rows = [], 0
            if pending:
                yield pa.Table.from_batches(pending).to_pandas()

    # --- connections and statements ----------------------------------------------------------

    @contextmanager
    def one_connection(self) -> Iterator[None]:
        """Within the block, this thread's statements share one connection: an upload attempt reads
        and updates the ledger once per batch, and opening a connection each time costs more than the
        statement (a login on Postgres). A failing statement ends the block, so an aborted transaction
        is never reused."""
        with driver_errors(self.conn_id), closing(self.hook.get_conn()) as conn:
            self._shared.conn = conn
            try:
                yield
            finally:
                self._shared.conn = None

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        shared = getattr(self._shared, "conn", None)
        with driver_errors(self.conn_id):
            if shared is not None:
                yield shared
                return
            with closing(self.hook.get_conn()) as conn:
                yield conn

    def query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._connection() as conn, closing(conn.cursor()) as cursor:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall())

    def query_table(self, sql: str, parameters: tuple, schema: pa.Schema, rows_per_fetch: int = 100_000) -> pa.Table:
        """A query's rows as an Arrow table of ``schema``, converted a slice at a time: a million rows never
        live as Python tuples at once (the garbage collector would rescan them all, over and over)."""
        batches = []
        with self._connection() as conn, closing(conn.cursor()) as cursor:
            cursor.execute(sql, parameters)
            while rows := cursor.fetchmany(rows_per_fetch):
                # A list per column: ``zip(*rows)`` would make an iterator per row, each one more object
                # for the garbage collector to scan (it tripled the time of a million-row read).
                columns = [pa.array([row[i] for row in rows], type=t) for i, t in enumerate(schema.types)]
                batches.append(pa.record_batch(columns, schema))
        return pa.Table.from_batches(batches, schema)

    def read_in_key_order(
        self, table: str, where: str, parameters: tuple, schema: pa.Schema, page_rows: int = 100_000
    ) -> pa.Table:
        """``schema``'s columns (text or integers; the first a unique, non-null key) of the rows matching
        ``where``.

        On SQLite and PostgreSQL a page of rows crosses the driver as one string of JSON lines, built by the
        database and parsed by Arrow: the driver would otherwise make a tuple and an object per cell, holding
        the interpreter lock throughout. 1M snapshot rows take 0.6 s either way alone, but beside a 1.5 s source
        read, rows made it 2.5 s and JSON lines leave it as it was. Pages follow the key (``> last key``), so
        memory stays bounded and the order needs no trust in how an aggregate visits rows. A database without
        the JSON functions (SQLite built without them, an engine that only speaks PostgreSQL's dialect) is
        read row by row."""
        if page_rows < 1:
            raise ValueError(f"page_rows must be at least 1, got {page_rows}")
        select = f"SELECT {', '.join(schema.names)} FROM {table} WHERE ({where})"
        if self.dialect == "sqlite" or self.dialect.startswith("postgres"):
            try:
                return self._read_json_lines(select, parameters, schema, page_rows)
            except TikTokWarehouseError as err:
                if not _missing_function(err):
                    raise
        return self.query_table(select, parameters, schema)

    def _read_json_lines(self, select: str, parameters: tuple, schema: pa.Schema, page_rows: int) -> pa.Table:
        key, pairs = schema.names[0], ", ".join(f"'{name}', {name}" for name in schema.names)
        if self.dialect == "sqlite":
            lines = f"group_concat(json_object({pairs}), char(10))"
        else:
            lines = f"string_agg(json_build_object({pairs})::text, chr(10))"
        options = pyarrow.json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        pages, last = [schema.empty_table()], None
        # A connection of its own: a statement failing for want of a function leaves no shared one aborted.
        with driver_errors(self.conn_id), closing(self.hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
            while True:
                after = "" if last is None else f" AND {key} > {self.placeholder}"
                cursor.execute(
                    f"SELECT count(*), max({key}), {lines} FROM ({select}{after} ORDER BY {key} "
                    f"LIMIT {int(page_rows)}) page",
                    (*parameters, *(() if last is None else (last,))),
                )
                count, last, text = cursor.fetchone()
                if not count:
                    break
                pages.append(pyarrow.json.read_json(pa.BufferReader(text.encode()), parse_options=options))
                if count < page_rows:
                    break
        return pa.concat_tables(pages)

    def execute(self, *statements: tuple[str, tuple]) -> None:
        """Run statements in one transaction."""
        with self._connection() as conn:
            with closing(conn.cursor()) as cursor:
                for sql, params in statements:
                    cursor.execute(sql, params)
            conn.commit()

    def execute_many(self, sql: str, rows: Iterable[tuple]) -> None:
        with self._connection() as conn:
            with closing(conn.cursor()) as cursor:
                cursor.executemany(sql, list(rows))
            conn.commit()

    # --- tables ------------------------------------------------------------------------------

    def ensure_table(self, table: str, spec: TableSpec, what: str) -> None:
        """Create the table, add columns a newer version of ours writes, or refuse clearly when an
        existing table is not ours (its key columns are missing) before anything is sent."""
        check_identifier(table, what)
        blob = "BYTEA" if self.dialect.startswith("postgres") else BLOB
        columns = ", ".join(f"{name} {kind.replace(BLOB, blob)}" for name, kind in spec.columns.items())
        primary_key = f", PRIMARY KEY ({', '.join(spec.key)})" if spec.unique else ""
        clustered = " WITHOUT ROWID" if spec.unique and spec.clustered and self.dialect == "sqlite" else ""
        self.execute((f"CREATE TABLE IF NOT EXISTS {table} ({columns}{primary_key}){clustered}", ()))
        with self._connection() as conn, closing(conn.cursor()) as cursor:
            cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            present = {str(column[0]).lower() for column in cursor.description or ()}
            cursor.fetchall()
        missing = [name for name in spec.names if name.lower() not in present]
        if any(name in spec.key for name in missing):
            raise TikTokConfigurationError(
                f"{what} {table!r} in connection {self.conn_id!r} is not a table this provider wrote: it lacks "
                f"column(s) {missing}. Point {what} at another table name, or drop that table."
            )
        for name in missing:  # written by an older version of this provider
            kind = spec.columns[name].replace(" NOT NULL", "").replace(BLOB, blob)
            self.execute((f"ALTER TABLE {table} ADD COLUMN {name} {kind}", ()))

    def upsert(self, table: str, spec: TableSpec, row: Mapping[str, Any]) -> None:
        names = spec.names
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in spec.key)
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({self.placeholders(len(names))}) "
            f"ON CONFLICT ({', '.join(spec.key)}) DO UPDATE SET {updates}"
        )
        self.execute((sql, tuple(_sql_value(row.get(name)) for name in names)))


def _frame(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame, a column of text straight into Arrow as pandas' own string type (a million rows of
    five columns: 0.26 s, where ``DataFrame.from_records`` takes 0.42 s); other columns (numbers, mixed types)
    as pandas infers them."""
    columns = {}
    for position in range(len(names)):
        values = [row[position] for row in rows]
        try:
            columns[position] = pa.array(values, type=pa.string()).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[position] = pd.Series(values)
    frame = pd.DataFrame(columns, copy=False)
    frame.columns = names  # a name may repeat (``SELECT a, b AS a``): the column check names it
    return frame


def _missing_function(err: TikTokWarehouseError) -> bool:
    """The database lacks a function a statement called (SQLite's and PostgreSQL's wording)."""
    message = str(err).lower()
    return "no such function" in message or ("function" in message and "does not exist" in message)


def _only_columns(cursor: Any, sql: str, parameters: Mapping[str, Any], columns: Sequence[str] | None) -> str:
    """The query narrowed to ``columns`` when it has each of them once: SQLite's cursor builds a Python object
    per cell, so the columns a sync ignores (often most of a ``SELECT *``) would cost as much as the ones it
    uses. Otherwise (a column missing or twice, a statement that is no subquery) the query as written, and
    the caller's column check names what is wrong. SQLite's flattener keeps the inner ``ORDER BY``."""
    import sqlite3

    if not columns:
        return sql
    inner = f"(\n{sql.strip().rstrip(';')}\n)"  # own lines: a trailing ``-- comment`` cannot swallow the ")"
    try:
        cursor.execute(f"SELECT * FROM {inner} LIMIT 0", parameters)
    except sqlite3.Error:
        return sql
    names = {column[0] for column in cursor.description or ()}
    # A subquery's repeated column name comes back as "name:1", "name:2", ...
    repeated = {name.rpartition(":")[0] for name in names if name.rpartition(":")[2].isdigit()}
    if not set(columns) <= names - repeated:
        return sql
    quoted = (f'"{name.replace(chr(34), chr(34) * 2)}"' for name in dict.fromkeys(columns))
    return f"SELECT {', '.join(quoted)} FROM {inner}"


def _has_adbc_postgres() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def _dollar_parameters(sql: str, parameters: Mapping[str, Any] | None) -> tuple[str, tuple]:
    """``:name`` placeholders as PostgreSQL's ``$n``, compiled by SQLAlchemy (it knows quoting and ``::casts``)."""
    from sqlalchemy.dialects import postgresql

    compiled = sqlalchemy.text(sql).compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))
    values = dict(parameters or {})
    return str(compiled), tuple(values[name] for name in compiled.positiontup or ())


def _sql_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value
