"""The SQL a store search actually runs, the databases' plans for it, and index sizes.

`capture_sql(store)` records every statement the store's read cursor executes (with its
arguments) while a search runs; `explain` asks the database for its plan of one such
statement (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (ANALYZE, BUFFERS)) and
`full_scans` picks the lines that read a big table (or a whole index) from end to end.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from carebase.store.base import Store

#: tables whose full scan matters at a million resources
BIG_TABLES = ("resource", "resource_version", "idx_")


class _Recorder:
    """A cursor proxy that records (sql, args) of each execute."""

    def __init__(self, cursor: Any, captured: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._cursor = cursor
        self._captured = captured

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._captured.append((sql, tuple(params or ())))
        return self._cursor.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@contextmanager
def capture_sql(store: Store) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Within the block, every statement run on the store's read cursors, in order."""
    captured: list[tuple[str, tuple[Any, ...]]] = []
    original = store._reading  # type: ignore[attr-defined]

    @contextmanager
    def reading() -> Iterator[Any]:
        with original() as cursor:
            yield _Recorder(cursor, captured)

    store._reading = reading  # type: ignore[attr-defined]
    try:
        yield captured
    finally:
        del store._reading  # type: ignore[attr-defined]


def sqlite_file(url: str) -> str:
    """The file path of an sqlite:/// URL."""
    return url.removeprefix("sqlite:///")


def explain(url: str, sql: str, args: tuple[Any, ...]) -> str:
    """The database's plan of `sql` (PostgreSQL runs it: ANALYZE, BUFFERS)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(sqlite_file(url)) as conn:
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
        depth: dict[int, int] = {0: -1}
        lines = []
        for node, parent, _unused, detail in rows:
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
        return "\n".join(lines)
    with psycopg.connect(url) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, args).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def full_scans(plan: str) -> list[str]:
    """Plan lines that read a big table, an index, or a whole type's or parameter's range.

    SQLite: `SCAN <table>` (with or without an index), and a `SEARCH` constrained only by
    the resource type or the parameter key, which walks every row of that type or parameter.
    PostgreSQL: `Seq Scan` of a big table.
    """
    found = []
    for line in plan.splitlines():
        text = line.strip().lstrip("-> ").strip()
        sqlite_scan = re.match(r"SCAN (\w+)", text)
        sqlite_range = re.match(
            r"SEARCH (\w+) USING (COVERING )?INDEX \w+ \((type|pkey)=\?\)$", text
        )
        pg_scan = re.match(r"(Parallel )?Seq Scan on (\w+)", text)
        table = (
            sqlite_scan.group(1)
            if sqlite_scan
            else sqlite_range.group(1)
            if sqlite_range
            else pg_scan.group(2)
            if pg_scan
            else None
        )
        if table and table.startswith(BIG_TABLES):
            found.append(text)
    return found


def index_sizes(url: str) -> list[tuple[str, str, int]]:
    """(kind, name, bytes) for every table and index of the store, biggest first."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(sqlite_file(url)) as conn:
            kinds = dict(conn.execute("SELECT name, type FROM sqlite_master").fetchall())
            try:
                rows = conn.execute(
                    "SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE"
                ).fetchall()
            except sqlite3.Error:  # no dbstat in this build: the whole file only
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                rows = [("(whole file; dbstat unavailable)", page * pages)]
        result = [(kinds.get(name, "table"), name, int(size)) for name, size in rows]
    else:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT CASE c.relkind WHEN 'i' THEN 'index' ELSE 'table' END, c.relname,"
                " pg_relation_size(c.oid)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
            ).fetchall()
            toast = conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.reltoastrelid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.reltoastrelid <> 0"
            ).fetchone()
        result = [(kind, name, int(size)) for kind, name, size in rows]
        if toast and toast[0]:
            result.append(("table", "(TOAST of all tables)", int(toast[0])))
    return sorted(result, key=lambda r: -r[2])


def database_bytes(url: str) -> int:
    """The whole database's size on disk."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(sqlite_file(url)) as conn:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(page * pages)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0
