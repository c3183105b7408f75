"""PostgreSQL backend: psycopg 3 with a connection pool; rows locked with FOR UPDATE on write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from carebase.errors import StorageError, TooCostly, Unavailable
from carebase.store.base import StoredResource
from carebase.store.indexer import index_resource
from carebase.store.repository import SqlTransaction
from carebase.store.schema import INDEX_TABLES, TEXT_TABLE
from carebase.store.sql_rows import row_to_stored
from carebase.store.sql_store import READ_SQL, Cursor, SqlStore, to_pyformat
from carebase.store.text_index import TextDocument, tsvector_literal

_READ_SQL = to_pyformat(READ_SQL)
#: Current rows of one type by ids (two arrays of equal length: the type repeated, the ids):
#: one probe of the (type, id) index per id whatever the statistics say. `type = ? AND id IN
#: (...)` on a table not analysed yet (the first import into a new database) is planned as a
#: scan of every row of the type (by the (type, last_updated) index), once per batch, which
#: made such an import quadratic; and with the type a constant, statistics that hold few rows
#: of it (analysed before a load of that type) make the (type, last_updated) index look as
#: good as (type, id) for each probe. With both keys taken from the array row, the planner has
#: no estimate for the type and probes (type, id). The LIMIT keeps it from flattening the
#: lateral subquery into a join; the array parameters keep the statement (and its prepared
#: plan) the same for every chunk.
READ_BY_IDS = (
    "SELECT r.id, r.version, r.last_updated, r.deleted, r.body"
    " FROM unnest(%s::text[], %s::text[]) AS k(type, id) CROSS JOIN LATERAL (SELECT id,"
    " version, last_updated, deleted, body FROM resource WHERE type = k.type AND id = k.id"
    " LIMIT 1) r"
)
# Arbitrary constant key for pg_advisory_xact_lock around migrations.
_MIGRATION_LOCK = 0x43415245


class PostgresStore(SqlStore):
    """Store in a PostgreSQL database."""

    dialect: Literal["sqlite", "postgresql"] = "postgresql"

    def __init__(
        self, url: str, *, pool_size: int = 10, statement_timeout_ms: int = 30_000
    ) -> None:
        super().__init__(url)
        self._statement_timeout_ms = statement_timeout_ms
        self._pool_size = max(1, pool_size)
        self._async_pool: AsyncConnectionPool | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        _probe(url)
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max(1, pool_size),
                open=True,
                timeout=30,
                kwargs={"autocommit": False},
                configure=self._configure,
            )
            self._pool.wait(timeout=30)
        except (psycopg.Error, Exception) as exc:  # pool raises PoolTimeout on a bad URL
            raise StorageError(f"Cannot connect to PostgreSQL at {_redact(url)}: {exc}") from exc

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # A ceiling on any one statement: a pathological search must not hold a backend and
        # a pool connection for minutes.
        conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")
        conn.commit()

    def q(self, sql: str) -> str:
        return to_pyformat(sql)

    async def read_async(self, type_: str, id_: str) -> StoredResource | None:
        # The hot path: a pool of async connections on the server's event loop, so a read by
        # id costs one round trip and no hop to a worker thread.
        loop = asyncio.get_running_loop()
        pool = self._async_pool if self._async_loop is loop else None
        if pool is None:
            pool = await self._open_async_pool(loop)
        with self._errors_translated():
            async with pool.connection() as conn:
                cur = await conn.execute(_READ_SQL, (type_, id_))
                row = await cur.fetchone()
        return row_to_stored(row, self.cipher) if row else None

    async def _open_async_pool(self, loop: asyncio.AbstractEventLoop) -> AsyncConnectionPool:
        """The async pool of this event loop, opened once (a pool belongs to one loop)."""
        if self._lock_loop is not loop:  # no await since the check: atomic on this loop
            self._async_lock, self._lock_loop = asyncio.Lock(), loop
        async with self._async_lock:
            if self._async_pool is not None and self._async_loop is loop:
                return self._async_pool
            pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                open=False,
                kwargs={"autocommit": True},
                configure=self._configure_async,
            )
            with self._errors_translated():
                await pool.open(wait=True, timeout=30)
            self._async_pool, self._async_loop = pool, loop
            return pool

    async def _configure_async(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")

    async def aclose(self) -> None:
        if self._async_pool is not None and self._async_loop is asyncio.get_running_loop():
            await self._async_pool.close()
        self._async_pool = None

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        with self._errors_translated(), self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _writing(self) -> Iterator[Cursor]:
        with (
            self._errors_translated(),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    def write_alone(self, sql: str, params: Sequence[Any]) -> int:
        # autocommit for this statement: the server wraps it in a transaction of its own,
        # one round trip instead of BEGIN, the statement and COMMIT
        with self._errors_translated(), self._pool.connection() as conn:
            conn.autocommit = True
            try:
                return int(conn.execute(self.q(sql), tuple(params)).rowcount)
            finally:
                if not conn.closed:
                    conn.autocommit = False

    @contextmanager
    def _errors_translated(self) -> Iterator[None]:
        """Driver errors as carebase errors: 422 too-costly, 503 unavailable, else 500."""
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            raise self._too_costly() from exc
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    def _too_costly(self) -> TooCostly:
        return TooCostly(
            f"The database gave up after the limit of {self._statement_timeout_ms} ms for one "
            "statement (CAREBASE_STATEMENT_TIMEOUT_MS); narrow the request"
        )

    def _new_transaction(self, cur: Cursor) -> SqlTransaction:
        return PostgresTransaction(
            cur,
            self.q,
            index_resource,
            lock_suffix=" FOR UPDATE",
            duplicate_errors=(psycopg.errors.UniqueViolation,),
        )

    def _lock_for_migration(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def _has_table(self, cur: Cursor, name: str) -> bool:
        row = cur.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def refresh_statistics(self) -> None:
        # One table per transaction: ANALYZE holds its lock until commit, and holding them all
        # at once could deadlock with DDL taking them in another order.
        with self._errors_translated(), self._pool.connection() as conn:
            for table in ("resource", "resource_version", *INDEX_TABLES, TEXT_TABLE):
                conn.execute(f"ANALYZE {table}")
                conn.commit()

    def close(self) -> None:
        self._pool.close()


class PostgresTransaction(SqlTransaction):
    """Bulk rows go in with COPY; row ids come from the sequence in blocks.

    Taking ids from the sequence up front lets resource rows be buffered like the rest, so a
    Bundle costs a few COPY streams instead of one INSERT round trip per entry.
    """

    _RID_BLOCK = 500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rids: list[int] = []

    def allocate_rid(self) -> int | None:
        if not self._rids:
            rows = self._cur.execute(
                "SELECT nextval(pg_get_serial_sequence('resource', 'rid'))"
                " FROM generate_series(1, %s)",
                (self._RID_BLOCK,),
            ).fetchall()
            self._rids = [row[0] for row in reversed(rows)]
        return self._rids.pop()

    def _read_chunk(self, type_: str, ids: list[str]) -> list[Any]:
        rows: list[Any] = self._cur.execute(READ_BY_IDS, ([type_] * len(ids), ids)).fetchall()
        return rows

    def lock(self, key: str) -> None:
        # SQLite needs nothing: its writers already run one at a time.
        self._cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def text_row(self, rid: int, document: TextDocument) -> tuple[Any, ...]:
        # tsvector literals (COPY parses them with tsvector's input function), so no text
        # search parser or dictionary of the server decides what the words are
        return rid, tsvector_literal(document.narrative), tsvector_literal(document.content)

    def write_rows(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        columns = ", ".join(self.columns(table))
        with self._cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _probe(url: str) -> None:
    """Connect once, so a wrong or unreachable database fails at once with the driver's reason.

    The pool alone would keep retrying in the background and only give up after its timeout
    (30 s), with a message that hides the cause (refused, unknown database, bad password).
    """
    try:
        timeout = {} if "connect_timeout" in conninfo_to_dict(url) else {"connect_timeout": 10}
        psycopg.connect(url, **timeout).close()  # type: ignore[arg-type]
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())  # one line: libpq puts hints on new lines
        raise StorageError(f"Cannot connect to PostgreSQL at {_redact(url)}: {reason}") from exc


def _unavailable(exc: psycopg.OperationalError) -> Unavailable:
    reason = " ".join(str(exc).split())
    return Unavailable(
        f"The database connection failed ({reason}); nothing was changed by this request "
        "unless it was a transaction that committed; retry shortly",
        headers={"Retry-After": "1"},
    )


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and ":" in url.split("@")[0].split("//")[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}//{creds.split(':')[0]}:***@{host}"
    return url
