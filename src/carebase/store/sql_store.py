"""The SQL implementation of the Store interface shared by SQLite and PostgreSQL.

Backends (sqlite.py, postgres.py) only supply connections, the placeholder style and how a
write transaction begins; every query lives here or in search_sql.py, written once with `?`
placeholders and translated for psycopg.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from carebase.errors import BadRequest, StorageError
from carebase.store.base import HistoryPage, SearchPage, Store, StoredResource, Transaction
from carebase.store.clock import datetime_to_ms
from carebase.store.schema import LATEST, MIGRATIONS
from carebase.store.search_sql import build_search
from carebase.store.sql_rows import row_to_stored

_COLUMNS = "type, id, version, last_updated, deleted, body"
#: Read by id: the current version or tombstone (`?` placeholders; see `to_pyformat`).
READ_SQL = f"SELECT {_COLUMNS} FROM resource WHERE type = ? AND id = ?"
# A version row has no body while it is the current version (the body is in `resource`).
_VERSION_COLUMNS = (
    "type, id, version, last_updated, interaction, COALESCE(body, (SELECT r.body FROM resource r"
    " WHERE r.rid = resource_version.rid AND r.version = resource_version.version))"
)


class Cursor(Protocol):
    """The DB-API cursor subset we use (sqlite3 and psycopg both provide it)."""

    def execute(self, sql: str, params: Any = ...) -> Any: ...
    def executemany(self, sql: str, params: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@cache
def to_pyformat(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (our SQL never has `?` or `%` in literals)."""
    return sql.replace("?", "%s")


def _cursor_int(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        value = int(cursor)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 2**63:  # the databases bind 64-bit integers
        raise BadRequest(
            f"Paging cursor {cursor!r} is not valid; follow the links the server returned",
            location="_cursor",
        )
    return value


class SqlStore(Store):
    """Store over a DB-API connection; subclasses provide connections and dialect details."""

    def __init__(self, url: str) -> None:
        self.url = url

    # --- what a backend supplies ------------------------------------------------------------
    @abstractmethod
    def _reading(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads outside a write transaction."""

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction that commits on exit, rolls back on error."""

    def q(self, sql: str) -> str:
        """SQL written with `?` placeholders in this backend's style."""
        return sql

    @abstractmethod
    def _new_transaction(self, cur: Cursor) -> Transaction:
        """The Transaction object for a write cursor."""

    # --- schema -------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._reading() as cur:
            if not self._has_table(cur, "schema_migrations"):
                return 0
            row = cur.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

    @abstractmethod
    def _has_table(self, cur: Cursor, name: str) -> bool:
        """Whether a table exists."""

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self._writing() as cur:
            self._lock_for_migration(cur)
            if not self._has_table(cur, "schema_migrations"):
                cur.execute(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                    " description TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
            row = cur.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            current = int(row[0] or 0)
            if current > LATEST:
                raise StorageError(
                    f"The database schema is at version {current}, newer than this carebase "
                    f"({LATEST}); upgrade carebase before using this database"
                )
            for migration in MIGRATIONS:
                if migration.number <= current:
                    continue
                statements = migration.sqlite if self.dialect == "sqlite" else migration.postgresql
                for statement in statements:
                    cur.execute(statement)
                cur.execute(
                    self.q(
                        "INSERT INTO schema_migrations (version, description, applied_at)"
                        " VALUES (?, ?, CURRENT_TIMESTAMP)"
                    ),
                    (migration.number, migration.description),
                )
                applied.append(migration.number)
        return applied

    def _lock_for_migration(self, cur: Cursor) -> None:
        """Serialise concurrent migrations (several workers starting at once)."""

    # --- reads --------------------------------------------------------------------------------
    def read(self, type_: str, id_: str) -> StoredResource | None:
        with self._reading() as cur:
            row = cur.execute(self.q(READ_SQL), (type_, id_)).fetchone()
        return row_to_stored(row) if row else None

    def vread(self, type_: str, id_: str, version: int) -> StoredResource | None:
        with self._reading() as cur:
            row = cur.execute(
                self.q(
                    f"SELECT {_VERSION_COLUMNS} FROM resource_version"
                    " WHERE type = ? AND id = ? AND version = ?"
                ),
                (type_, id_, version),
            ).fetchone()
        return row_to_stored(row) if row else None

    def history(
        self,
        type_: str | None = None,
        id_: str | None = None,
        *,
        since: datetime | None = None,
        at: datetime | None = None,
        count: int = 20,
        cursor: str | None = None,
        with_total: bool = True,
    ) -> HistoryPage:
        where: list[str] = []
        params: list[Any] = []
        if type_ is not None:
            where.append("type = ?")
            params.append(type_)
        if id_ is not None:
            where.append("id = ?")
            params.append(id_)
        if since is not None:
            where.append("last_updated >= ?")
            params.append(datetime_to_ms(since))
        if at is not None:
            inner = " AND ".join([*where, "last_updated <= ?"])
            where = [
                f"seq IN (SELECT MAX(seq) FROM resource_version WHERE {inner} GROUP BY type, id)"
            ]
            params = [*params, datetime_to_ms(at)]
        filters = list(where)
        filter_params = list(params)
        after = _cursor_int(cursor)
        if after is not None:
            where.append("seq < ?")
            params.append(after)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        sql = (
            f"SELECT seq, {_VERSION_COLUMNS} FROM resource_version{clause}"
            " ORDER BY seq DESC LIMIT ?"
        )
        with self._reading() as cur:
            rows = cur.execute(self.q(sql), (*params, count + 1)).fetchall()
            total = None
            if with_total:
                count_clause = (" WHERE " + " AND ".join(filters)) if filters else ""
                total_row = cur.execute(
                    self.q(f"SELECT COUNT(*) FROM resource_version{count_clause}"), filter_params
                ).fetchone()
                total = int(total_row[0])
        entries = [row_to_stored(row[1:]) for row in rows[:count]]
        next_cursor = str(rows[count - 1][0]) if len(rows) > count and count > 0 else None
        return HistoryPage(entries, next_cursor, total)

    def search(
        self,
        type_: str | None,
        params: list[tuple[str, str]],
        *,
        count: int = 20,
        cursor: str | None = None,
        with_total: bool = True,
    ) -> SearchPage:
        criteria = build_search(type_, params, dialect=self.dialect)
        where, args = list(criteria.where), list(criteria.args)
        filters, filter_args = list(where), list(args)
        after = _cursor_int(cursor)
        if after is not None:
            where.append("rid > ?")
            args.append(after)
        clause = " AND ".join(where)
        with self._reading() as cur:
            rows = cur.execute(
                self.q(f"SELECT rid, {_COLUMNS} FROM resource WHERE {clause} ORDER BY rid LIMIT ?"),
                (*args, count + 1),
            ).fetchall()
            total = None
            if with_total:
                total_row = cur.execute(
                    self.q(f"SELECT COUNT(*) FROM resource WHERE {' AND '.join(filters)}"),
                    filter_args,
                ).fetchone()
                total = int(total_row[0])
        entries = [row_to_stored(row[1:]) for row in rows[:count]]
        next_cursor = str(rows[count - 1][0]) if len(rows) > count and count > 0 else None
        return SearchPage(entries, next_cursor, total)

    def iter_current(self, type_: str | None = None) -> Iterator[StoredResource]:
        last = 0
        while True:
            sql = f"SELECT rid, {_COLUMNS} FROM resource WHERE deleted = 0 AND rid > ?"
            args: list[Any] = [last]
            if type_ is not None:
                sql += " AND type = ?"
                args.append(type_)
            with self._reading() as cur:
                rows = cur.execute(self.q(sql + " ORDER BY rid LIMIT 1000"), args).fetchall()
            if not rows:
                return
            for row in rows:
                yield row_to_stored(row[1:])
            last = rows[-1][0]

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._writing() as cur:
            tx = self._new_transaction(cur)
            yield tx
            tx.flush()  # type: ignore[attr-defined]
