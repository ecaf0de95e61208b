"""Names a sync gives Airflow's lineage: the audience asset, and OpenLineage input/output datasets.

An audience is ``tiktok://<advertiser_id>/audiences/<audience_id or url-quoted name>``, both as an Airflow
asset (for data-aware scheduling) and as the OpenLineage output dataset (namespace ``tiktok://<advertiser_id>``,
name ``audiences/<id>``). Inputs are the tables the sync's query reads. When the OpenLineage provider is
installed its ``OperatorLineage`` and client ``Dataset`` are returned; without it, plain stand-ins with the
same attributes, so callers and tests need no optional dependency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlparse
from sqlparse.sql import Identifier, IdentifierList, Parenthesis, Where
from sqlparse.tokens import CTE, DML, Keyword

if TYPE_CHECKING:
    from airflow.sdk import Asset, AssetAlias

SCHEME = "tiktok"
ALIAS = "tiktok_audience_syncs"
TABLE_CLAUSES = ("FROM", "JOIN")


def audience_key(audience: str | int) -> str:
    """The path segment naming an audience: its id as is, or its name url-quoted (no ``/`` left)."""
    text = str(audience)
    return text if text.isdigit() else quote(text, safe="")


def audience_asset_uri(advertiser_id: str | int, audience: str | int) -> str:
    """``tiktok://<advertiser_id>/audiences/<audience_id or url-quoted name>``."""
    return f"{SCHEME}://{advertiser_id}/audiences/{audience_key(audience)}"


def audience_asset(advertiser_id: str | int, audience_name_or_id: str | int) -> Asset:
    """The Airflow asset a sync updates; schedule a DAG on it to run when the audience was refreshed."""
    from airflow.sdk import Asset

    uri = audience_asset_uri(advertiser_id, audience_name_or_id)
    return Asset(uri=uri, name=uri, group="tiktok_audience")


def audience_alias() -> AssetAlias:
    """The alias a sync declares as its outlet when its audience is only known at run time (mapped tasks):
    the events it adds through the alias still trigger DAGs scheduled on ``audience_asset(...)``."""
    from airflow.sdk import AssetAlias

    return AssetAlias(name=ALIAS, group="tiktok_audience")


@dataclass(frozen=True)
class LineageDataset:
    """An OpenLineage dataset without the client library: namespace + name (+ facets)."""

    namespace: str
    name: str
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LineageStandIn:
    """Same attributes as the OpenLineage provider's ``OperatorLineage``, used when it is not installed."""

    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)


def _walk_tables(statement: Any, ctes: set[str], found: list[str]) -> None:
    expecting_table = False
    for token in statement.tokens:
        if token.is_whitespace or token.ttype in (sqlparse.tokens.Comment.Single, sqlparse.tokens.Comment.Multiline):
            continue
        if token.ttype is CTE:
            expecting_table = False
            continue
        if token.ttype is Keyword and token.normalized.endswith(TABLE_CLAUSES):
            expecting_table = True
            continue
        candidates = list(token.get_identifiers()) if isinstance(token, IdentifierList) else [token]
        for candidate in candidates:
            if isinstance(candidate, Identifier) and any(isinstance(t, Parenthesis) for t in candidate.tokens):
                if candidate.get_real_name() and not expecting_table:  # a CTE: `name AS (SELECT ...)`
                    ctes.add(candidate.get_real_name().lower())
                for inner in candidate.tokens:
                    if isinstance(inner, Parenthesis):
                        _walk_tables(inner, ctes, found)
            elif isinstance(candidate, Identifier) and expecting_table:
                parent, name = candidate.get_parent_name(), candidate.get_real_name()
                if name and name.lower() not in ctes:
                    found.append(f"{parent}.{name}" if parent else name)
            elif isinstance(candidate, (Parenthesis, Where)) or (candidate.is_group and candidate.ttype is None):
                _walk_tables(candidate, ctes, found)
        if token.ttype is not DML:
            expecting_table = False


def tables_read_by(sql: str) -> list[str]:
    """Tables a query reads (``schema.table`` when qualified), in order, without CTE names or duplicates.

    Uses OpenLineage's SQL parser when the provider is installed, otherwise ``sqlparse`` (a common-sql
    dependency); anything unparseable yields no tables rather than an error.
    """
    try:
        from airflow.providers.openlineage.sqlparser import SQLParser

        metadata = SQLParser().parse(SQLParser.split_sql_string(sql))
        if metadata is not None:
            return list(dict.fromkeys(table.qualified_name for table in metadata.in_tables))
    except ImportError:
        pass
    found: list[str] = []
    try:
        for statement in sqlparse.parse(sql):
            _walk_tables(statement, set(), found)
    except Exception:  # lineage must never fail a sync
        return []
    return list(dict.fromkeys(found))


def warehouse_namespace(connection: Any) -> tuple[str, str | None]:
    """OpenLineage namespace of a warehouse connection (no credentials), and its database name if any."""
    conn_type = (connection.conn_type or "sql").lower()
    if conn_type == "sqlite":
        return f"sqlite://{connection.host}", None
    port = f":{connection.port}" if connection.port else ""
    return f"{conn_type}://{connection.host}{port}", connection.schema or None


def _connection_of(warehouse: Any) -> Any:
    from airflow.sdk import BaseHook

    if isinstance(warehouse, str):
        return BaseHook.get_connection(warehouse)
    return warehouse.get_connection(getattr(warehouse, warehouse.conn_name_attr))


def _operator_lineage(inputs: list[LineageDataset], outputs: list[LineageDataset]) -> Any:
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:
        return LineageStandIn(inputs=inputs, outputs=outputs)
    convert = lambda d: Dataset(namespace=d.namespace, name=d.name, facets=d.facets)  # noqa: E731
    return OperatorLineage(inputs=[convert(d) for d in inputs], outputs=[convert(d) for d in outputs])


def sync_lineage(
    sql: str | None,
    warehouse_conn_id_or_hook: Any,
    advertiser_id: str | int,
    audience_id: str | int | None,
    audience_name: str | None,
    other_audiences: Mapping[str, str | None] | None = None,
) -> Any:
    """OpenLineage of one sync: the warehouse tables its query reads -> ``tiktok://<advertiser>`` ``audiences/<id>``,
    one output per ad account (``other_audiences``: the other accounts' audience ids, by advertiser)."""
    inputs: list[LineageDataset] = []
    if sql and warehouse_conn_id_or_hook is not None:
        namespace, database = warehouse_namespace(_connection_of(warehouse_conn_id_or_hook))
        for table in tables_read_by(sql):
            inputs.append(LineageDataset(namespace, f"{database}.{table}" if database else table))
    outputs = []
    for advertiser, audience_id_of_account in {str(advertiser_id): audience_id, **(other_audiences or {})}.items():
        audience = audience_id_of_account if audience_id_of_account not in (None, "") else audience_name
        outputs.append(LineageDataset(f"{SCHEME}://{advertiser}", f"audiences/{audience_key(audience or '')}"))
    return _operator_lineage(inputs, outputs)


#: What an audience's asset event carries: counts and names, never an identifier.
REFRESH_EXTRA = ("advertiser_id", "audience_id", "audience_name", "entered", "synced", "unchanged", "removed")


def announce_refresh(outlet_events: Any, result: dict[str, Any], dag_id: str, run_id: str, map_index: int) -> None:
    """After a sync: an event for each ad account's audience, by name and by id, through ``audience_alias()``;
    DAGs scheduled on ``audience_asset(...)`` run after the refresh. Each event names its own account."""
    extra = {key: result.get(key) for key in REFRESH_EXTRA} | {
        "dag_id": dag_id,
        "run_id": run_id,
        "map_index": map_index,
    }
    events = outlet_events[audience_alias()]
    accounts = result.get("audience_ids") or {result["advertiser_id"]: result.get("audience_id")}
    for advertiser, audience_id in accounts.items():
        account_extra = extra | {"advertiser_id": advertiser, "audience_id": audience_id}
        for audience in {result.get("audience_name"), audience_id} - {None}:
            events.add(audience_asset(str(advertiser), str(audience)), extra=account_extra)
