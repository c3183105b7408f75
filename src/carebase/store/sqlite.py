"""SQLite backend: one connection per thread, WAL, writers serialised with BEGIN IMMEDIATE."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from carebase.errors import StorageError, TooCostly
from carebase.store.base import StoredResource
from carebase.store.indexer import index_resource
from carebase.store.repository import SqlTransaction
from carebase.store.sql_rows import row_to_stored
from carebase.store.sql_store import READ_SQL, Cursor, SqlStore

BUSY_TIMEOUT_MS = 30_000
#: Most units of work one COMMIT may carry (bounds the wait of the first in a busy stream).
MAX_GROUP_COMMIT = 64


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///PATH` URL (`sqlite:///:memory:` is refused: not shared)."""
    if not url.startswith("sqlite:///"):
        raise StorageError(f"Not a SQLite URL: {url!r} (expected sqlite:///PATH)")
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:":
        raise StorageError("SQLite needs a file path (sqlite:///PATH); in-memory is not supported")
    return path


class SQLiteTransaction(SqlTransaction):
    """Row ids counted in-process, so resource rows are buffered and inserted in bulk.

    Safe because BEGIN IMMEDIATE makes this the only writer until it commits; rows are never
    removed from `resource`, so MAX(rid) + 1 is what SQLite itself would assign.
    """

    #: the FTS5 text table keys its rows by rowid (= the resource's rid)
    text_key = "rowid"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_rid: int | None = None

    def allocate_rid(self) -> int | None:
        if self._next_rid is None:
            row = self._cur.execute("SELECT COALESCE(MAX(rid), 0) FROM resource").fetchone()
            self._next_rid = int(row[0]) + 1
        rid = self._next_rid
        self._next_rid += 1
        return rid


class SQLiteStore(SqlStore):
    """Store in one SQLite file."""

    dialect: Literal["sqlite", "postgresql"] = "sqlite"

    def __init__(
        self, url: str, *, synchronous: str = "FULL", statement_timeout_ms: int = 30_000
    ) -> None:
        super().__init__(url)
        self._statement_timeout_s = statement_timeout_ms / 1000
        self.path = sqlite_path(url)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Group commit state (see _writing): guarded by _write_lock, except the counters and
        # the outcome of settled batches, which are guarded by the condition's own lock.
        self._batch = threading.Condition()
        self._queued = 0
        self._open = False
        self._members = 0
        self._batch_number = 0
        self._settled = 0
        self._failures: dict[int, StorageError] = {}
        self._writer_conn: sqlite3.Connection | None = None

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        # 16 KiB pages (for a new file; an existing file keeps its own): index inserts
        # dirty fewer pages per commit, which made Bundle ingest about 25% faster.
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size=-{cache_kib}")
        conn.execute("PRAGMA temp_store=MEMORY")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection for reads (a small cache: there may be many threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(cache_kib=8 * 1024)
        return conn

    def _writer(self) -> sqlite3.Connection:
        """The one connection all writes go through (call with the write lock held).

        A connection's page cache is dropped whenever another connection has written, so
        writes spread over the threads of the server's pool would each start cold; one
        writer keeps its index pages warm (ingest about 25% faster over HTTP).
        """
        if self._writer_conn is None:
            self._writer_conn = self._connect(cache_kib=64 * 1024)
        return self._writer_conn

    def read(self, type_: str, id_: str) -> StoredResource | None:
        # The hot path: one prepared statement on this thread's connection, no context managers.
        row = self._conn().execute(READ_SQL, (type_, id_)).fetchone()
        return row_to_stored(row, self.cipher) if row else None

    async def read_async(self, type_: str, id_: str) -> StoredResource | None:
        # A primary-key lookup in-process is cheaper than a hop to a worker thread.
        return self.read(type_, id_)

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        # Searches and history get the same ceiling as PostgreSQL's statement_timeout: SQLite
        # asks the progress handler every few thousand steps whether to give up.
        conn = self._conn()
        deadline = time.monotonic() + self._statement_timeout_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 20_000)
        try:
            yield conn.cursor()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise TooCostly(
                    f"The query ran over the limit of {self._statement_timeout_s * 1000:.0f} ms "
                    "(CAREBASE_STATEMENT_TIMEOUT_MS); narrow the request"
                ) from exc
            raise StorageError(f"SQLite error: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite error: {exc}") from exc
        finally:
            conn.set_progress_handler(None, 0)

    @contextmanager
    def _writing(self) -> Iterator[Cursor]:
        """A unit of work, group-committed with the units of other threads waiting to write.

        SQLite has one writer at a time, and each COMMIT waits for the disk (fsync). Threads
        queue on a lock (waking at once, where SQLite's busy handler would poll with growing
        sleeps); each one's work runs in a SAVEPOINT of one open transaction, and whoever
        finds nobody else queued commits the lot with one fsync. A unit that fails is rolled
        back to its savepoint alone. Nobody returns before the COMMIT holding its work has
        succeeded, so a success is as durable as with a COMMIT each. BEGIN IMMEDIATE still
        guards against other processes.
        """
        with self._batch:
            self._queued += 1
        self._write_lock.acquire()
        with self._batch:
            self._queued -= 1
        conn = self._writer()
        try:
            if not self._open:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise StorageError(
                        f"SQLite could not start a write transaction: {exc}"
                    ) from exc
                self._open, self._members = True, 0
                self._batch_number += 1
            batch = self._batch_number
            conn.execute("SAVEPOINT unit")
            cur = conn.cursor()
            try:
                yield cur
                conn.execute("RELEASE unit")
                self._members += 1
                failed = None
            except BaseException as exc:
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                failed = exc
            finally:
                # Closed here, under the write lock: a cursor left to the garbage collector
                # (one a traceback keeps alive, say) resets its statement on the shared writer
                # connection from whichever thread collects it, which can be mid-write.
                cur.close()
            commit = self._members > 0 and (self._queued == 0 or self._members >= MAX_GROUP_COMMIT)
            if commit or (self._members == 0 and failed is not None):
                self._finish_batch(conn, batch, commit)
        finally:
            self._write_lock.release()
        if failed is not None:
            raise failed
        self._wait_for(batch)

    def _finish_batch(self, conn: sqlite3.Connection, batch: int, commit: bool) -> None:
        """COMMIT (or, with no successful member, ROLLBACK) the open transaction; wake waiters."""
        error: StorageError | None = None
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            error = StorageError(f"SQLite commit failed: {exc}")
        self._open = False
        with self._batch:
            self._settled = batch
            if error is not None:
                self._failures[batch] = error
            self._batch.notify_all()
        if error is not None:
            raise error

    def _wait_for(self, batch: int) -> None:
        """Return once `batch` is committed; raise if its COMMIT failed."""
        with self._batch:
            while self._settled < batch:
                self._batch.wait()
            error = self._failures.get(batch)
        if error is not None:
            raise StorageError(error.message)

    def _new_transaction(self, cur: Cursor) -> SqlTransaction:
        return SQLiteTransaction(
            cur, self.q, index_resource, duplicate_errors=(sqlite3.IntegrityError,)
        )

    def _has_table(self, cur: Cursor, name: str) -> bool:
        row = cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
        self._writer_conn = None
