"""The SQL implementation of the Store interface shared by SQLite and PostgreSQL.

Backends (sqlite.py, postgres.py) only supply connections, the placeholder style and how a
write transaction begins; every query lives here or in search_sql.py, written once with `?`
placeholders and translated for psycopg.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any, Literal, Protocol

from carebase.errors import BadRequest, StorageError
from carebase.store.base import (
    HistoryPage,
    SearchPage,
    Store,
    StoredResource,
    TotalMode,
    Transaction,
)
from carebase.store.body_cipher import BodyCipher
from carebase.store.clock import datetime_to_ms
from carebase.store.repository import SqlTransaction
from carebase.store.schema import LATEST, MIGRATIONS
from carebase.store.search_include import IncludeRule, collect_includes, is_include_parameter
from carebase.store.search_include import parse_rule as parse_include
from carebase.store.search_order import Cursor as PageCursor
from carebase.store.search_order import (
    SortPlan,
    beyond,
    decode_cursor,
    encode_cursor,
    key_column,
    order_by,
    parse_sort,
)
from carebase.store.search_restriction import Restriction
from carebase.store.search_sql import IndexFirst, SearchCriteria, build_search, searched_types
from carebase.store.sql_rows import row_to_stored
from carebase.store.terminology import Terminology

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


def _sort_types(type_: str | None, params: list[tuple[str, str]]) -> tuple[str, ...] | None:
    """The resource types a sort must hold for: those the search covers, or None (every
    type) when `_type` is invalid - build_search reports that."""
    if type_ is not None:
        return (type_,)
    try:
        types = searched_types(None, params)
    except BadRequest:
        return None
    return tuple(types) if types is not None else None


@dataclass(frozen=True, slots=True)
class _Shape:
    """A search's parameters split: selection criteria, sort, include rules, ignored names."""

    criteria: list[tuple[str, str]]
    sort: SortPlan
    includes: list[IncludeRule]
    ignored: tuple[str, ...]


def search_shape(
    type_: str | None, params: list[tuple[str, str]], dialect: Any, *, lenient: bool
) -> _Shape:
    """Split `params` into criteria, `_sort` and `_include`/`_revinclude` rules; invalid
    result parameters are 400 (ignored, and named in `ignored`, when `lenient`)."""
    criteria: list[tuple[str, str]] = []
    sorts: list[str] = []
    rules: list[IncludeRule] = []
    ignored: list[str] = []
    for name, value in params:
        try:
            if name == "_sort":
                sorts.append(value)
            elif is_include_parameter(name):
                rules.append(parse_include(name, value))
            else:
                criteria.append((name, value))
        except BadRequest:
            if not lenient:
                raise
            ignored.append(name)
    if len(sorts) > 1:
        raise BadRequest(
            "_sort may be given once (list several keys in it: _sort=a,-b)", location="_sort"
        )
    try:
        plan = parse_sort(_sort_types(type_, params), sorts[0] if sorts else None, dialect)
    except BadRequest:
        if not lenient:
            raise
        plan, ignored = parse_sort(None, None, dialect), [*ignored, "_sort"]
    rules = [rule for rule in rules if rule.parameter not in ignored]
    return _Shape(criteria, plan, rules, tuple(ignored))


class SqlStore(Store):
    """Store over a DB-API connection; subclasses provide connections and dialect details."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: reads the ValueSets and CodeSystems held here (search modifiers :in, :below, ...)
        self.terminology = Terminology(self)
        #: encrypts bodies at rest when configured (store/body_cipher.py); None: plaintext
        self.cipher: BodyCipher | None = None

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

    def reading(self) -> AbstractContextManager[Cursor]:
        """A read cursor for the store's own record modules (accounts, audit log)."""
        return self._reading()

    def writing(self) -> AbstractContextManager[Cursor]:
        """A write cursor (one committed unit of work) for the store's own record modules."""
        return self._writing()

    def write_alone(self, sql: str, params: Sequence[Any]) -> int:
        """Run one write statement (`?` placeholders) as a transaction of its own; the
        number of rows it changed. PostgreSQL runs it in one round trip (no BEGIN and
        COMMIT of their own), for writers that append often."""
        with self._writing() as cur:
            return int(cur.execute(self.q(sql), tuple(params)).rowcount)

    @abstractmethod
    def _new_transaction(self, cur: Cursor) -> SqlTransaction:
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
        return row_to_stored(row, self.cipher) if row else None

    def vread(self, type_: str, id_: str, version: int) -> StoredResource | None:
        with self._reading() as cur:
            row = cur.execute(
                self.q(
                    f"SELECT {_VERSION_COLUMNS} FROM resource_version"
                    " WHERE type = ? AND id = ? AND version = ?"
                ),
                (type_, id_, version),
            ).fetchone()
        return row_to_stored(row, self.cipher) if row else None

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
        restriction: Restriction | None = None,
    ) -> HistoryPage:
        where: list[str] = []
        params: list[Any] = []
        if type_ is not None:
            where.append("type = ?")
            params.append(type_)
        if id_ is not None:
            where.append("id = ?")
            params.append(id_)
        if restriction is not None:
            visible = build_search(type_, [], dialect=self.dialect, restriction=restriction)
            where.append(f"rid IN (SELECT rid FROM resource WHERE {' AND '.join(visible.where)})")
            params.extend(visible.args)
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
        entries = [row_to_stored(row[1:], self.cipher) for row in rows[:count]]
        next_cursor = str(rows[count - 1][0]) if len(rows) > count and count > 0 else None
        return HistoryPage(entries, next_cursor, total)

    def search(
        self,
        type_: str | None,
        params: list[tuple[str, str]],
        *,
        count: int = 20,
        cursor: str | None = None,
        total: TotalMode = "accurate",
        lenient: bool = False,
        compartment: tuple[str, str] | None = None,
        max_include: int = 1000,
        restriction: Restriction | None = None,
        include_restriction: Restriction | None = None,
    ) -> SearchPage:
        shape = search_shape(type_, params, self.dialect, lenient=lenient)
        criteria = build_search(
            type_,
            shape.criteria,
            dialect=self.dialect,
            lenient=lenient,
            compartment=compartment,
            terminology=self.terminology,
            restriction=restriction,
        )
        plan = shape.sort
        boundary = decode_cursor(plan, cursor)
        reverse = boundary is not None and boundary.direction == "p"
        fast = criteria.index_first
        with self._reading() as cur:
            if not count:
                rows = []
            elif fast is not None and not plan.keys:
                rows = self._index_first_page(cur, fast, boundary, reverse, count + 1)
            else:
                rows = self._sorted_page(cur, criteria, plan, boundary, reverse, count + 1)
            matched = None if total == "none" else self._count(cur, criteria, total)
            more = len(rows) > count
            rows = rows[:count]
            if reverse:
                rows.reverse()
            included: list[StoredResource] = []
            truncated = False
            if shape.includes and rows:

                def query(statement: str, values: list[Any]) -> list[Any]:
                    result: list[Any] = cur.execute(self.q(statement), values).fetchall()
                    return result

                admit = None
                if include_restriction is not None:
                    admit = partial(self._admitted, cur, include_restriction)
                included, truncated = collect_includes(
                    query,
                    shape.includes,
                    [row[0] for row in rows],
                    max_include,
                    self.cipher,
                    admit,
                )
        width = 1 + len(_COLUMNS.split(","))

        def boundary_cursor(row: Any, direction: Literal["n", "p"]) -> str:
            return encode_cursor(plan, tuple(row[width:]), row[0], direction)

        has_next = bool(rows) and (more or reverse)
        has_previous = bool(rows) and (more if reverse else boundary is not None)
        next_cursor = boundary_cursor(rows[-1], "n") if has_next else None
        previous_cursor = boundary_cursor(rows[0], "p") if has_previous else None
        if not rows and count and boundary is not None:  # paged past what is left: turn back
            back = encode_cursor(plan, boundary.values, boundary.rid, "n" if reverse else "p")
            next_cursor, previous_cursor = (back, None) if reverse else (None, back)
        return SearchPage(
            entries=[row_to_stored(row[1:width], self.cipher) for row in rows],
            next_cursor=next_cursor,
            total=matched,
            previous_cursor=previous_cursor,
            included=included,
            includes_truncated=truncated,
            ignored=(*criteria.ignored, *shape.ignored),
        )

    def visible(self, type_: str, id_: str, restriction: Restriction) -> bool:
        if restriction.of(type_) is None:
            return False
        where, args = self._visible_where(type_, restriction)
        sql = f"SELECT 1 FROM resource WHERE id = ? AND {where}"
        with self._reading() as cur:
            return cur.execute(self.q(sql), [id_, *args]).fetchone() is not None

    def _visible_where(self, type_: str, restriction: Restriction) -> tuple[str, list[Any]]:
        """The condition on `resource` rows of `type_` the caller may see (built once per
        restriction and type: the read hot path of a restricted token runs it every time)."""
        key = ("visible", self.dialect, type_)
        built: tuple[str, list[Any]] | None = restriction.memo.get(key)  # type: ignore[assignment]
        if built is None:
            criteria = build_search(type_, [], dialect=self.dialect, restriction=restriction)
            built = (" AND ".join(criteria.where), criteria.args)
            restriction.memo[key] = built
        return built[0], list(built[1])

    def _admitted(self, cur: Cursor, restriction: Restriction, rids: list[int]) -> list[int]:
        """The row ids among `rids` the caller may see (an included resource must be
        readable by the caller, or it is left out)."""
        if not rids:
            return rids
        marks = ", ".join("?" * len(rids))
        typed = cur.execute(
            self.q(f"SELECT rid, type FROM resource WHERE rid IN ({marks})"), rids
        ).fetchall()
        by_type: dict[str, list[int]] = {}
        for rid, type_ in typed:
            by_type.setdefault(type_, []).append(rid)
        admitted: set[int] = set()
        for type_, group in by_type.items():
            visibility = restriction.of(type_)
            if visibility is None:
                continue
            if visibility.unrestricted:
                admitted.update(group)
                continue
            where, args = self._visible_where(type_, restriction)
            marks = ", ".join("?" * len(group))
            sql = f"SELECT rid FROM resource WHERE rid IN ({marks}) AND {where}"
            admitted.update(r[0] for r in cur.execute(self.q(sql), [*group, *args]))
        return [rid for rid in rids if rid in admitted]

    def _sorted_page(
        self,
        cur: Cursor,
        criteria: SearchCriteria,
        plan: SortPlan,
        boundary: PageCursor | None,
        reverse: bool,
        limit: int,
    ) -> list[Any]:
        """One page in `plan`'s order: the matches' row ids and sort keys first (from the
        index table alone when the criteria allow), then the page's rows."""
        keys = "".join(f", {k.expression} AS {key_column(i)}" for i, k in enumerate(plan.keys))
        fast = criteria.index_first
        if fast is not None:
            source, where, where_args = f"{fast.table} resource", fast.where, fast.args
        else:
            source, where, where_args = "resource", " AND ".join(criteria.where), criteria.args
        inner = (
            f"SELECT {'DISTINCT ' if fast else ''}resource.rid AS rid{keys}"
            f" FROM {source} WHERE {where}"
        )
        if plan.keys:  # a fence: compute each key once per row, not again in the keyset test
            inner += " OFFSET 0" if self.dialect == "postgresql" else " LIMIT -1 OFFSET 0"
        sql = f"SELECT * FROM ({inner}) m"
        args: list[Any] = [a for k in plan.keys for a in k.args] + list(where_args)
        if boundary is not None:
            condition, condition_args = beyond(plan, boundary, self.dialect)
            sql += f" WHERE {condition}"
            args += condition_args
        sql += f" ORDER BY {order_by(plan, self.dialect, reverse=reverse)} LIMIT ?"
        found = cur.execute(self.q(sql), (*args, limit)).fetchall()
        bodies = self._rows_by_rid(cur, [row[0] for row in found])
        return [(*bodies[row[0]], *row[1:]) for row in found if row[0] in bodies]

    def _rows_by_rid(self, cur: Cursor, rids: list[int]) -> dict[int, Any]:
        """rid -> (rid, type, id, version, last_updated, deleted, body) of those rows."""
        if not rids:
            return {}
        marks = ", ".join("?" * len(rids))
        found = cur.execute(
            self.q(f"SELECT rid, {_COLUMNS} FROM resource WHERE rid IN ({marks})"), rids
        ).fetchall()
        return {row[0]: row for row in found}

    def _index_first_page(
        self,
        cur: Cursor,
        fast: IndexFirst,
        boundary: PageCursor | None,
        reverse: bool,
        limit: int,
    ) -> list[Any]:
        """One page of matches in rid order read from the index table, then their rows."""
        sql = f"SELECT DISTINCT resource.rid FROM {fast.table} resource WHERE {fast.where}"
        args = list(fast.args)
        if boundary is not None:
            sql += f" AND resource.rid {'<' if reverse else '>'} ?"
            args.append(boundary.rid)
        sql += f" ORDER BY resource.rid{' DESC' if reverse else ''} LIMIT ?"
        rids = [row[0] for row in cur.execute(self.q(sql), (*args, limit)).fetchall()]
        by_rid = self._rows_by_rid(cur, rids)
        return [by_rid[rid] for rid in rids if rid in by_rid]

    def _count(self, cur: Cursor, criteria: SearchCriteria, mode: TotalMode) -> int:
        """The number of matches: counted (from the index alone when the search allows), or
        on PostgreSQL for `estimate` the planner's row estimate (no scan)."""
        fast = criteria.index_first
        if fast is not None:
            rows = f"SELECT DISTINCT resource.rid FROM {fast.table} resource WHERE {fast.where}"
            args = fast.args
        else:
            rows = f"SELECT rid FROM resource WHERE {' AND '.join(criteria.where)}"
            args = criteria.args
        if mode == "estimate" and self.dialect == "postgresql":
            plan = cur.execute(self.q(f"EXPLAIN (FORMAT JSON) {rows}"), args).fetchone()[0]
            return int(plan[0]["Plan"]["Plan Rows"])
        counted = cur.execute(self.q(f"SELECT COUNT(*) FROM ({rows}) matches"), args)
        return int(counted.fetchone()[0])

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
                yield row_to_stored(row[1:], self.cipher)
            last = rows[-1][0]

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._writing() as cur:
            tx = self._new_transaction(cur)
            tx.cipher = self.cipher
            yield tx
            tx.flush()
