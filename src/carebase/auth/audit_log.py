"""The durable audit trail: entries buffered in memory, group-committed to the database.

`record()` only appends to a bounded buffer; a writer thread turns what has accumulated into
log rows (compact: the AuditEvent is rendered when read, see `auth/audit_detail.py`) and
appends them - hash-chained - in one transaction every `flush_ms` milliseconds, so a request
never waits for the database. If appending fails the trail turns unhealthy and `record()`
raises `Unavailable` (the API then serves no patient data, rather than serve it unaudited)
until a retry succeeds; entries already accepted stay buffered and are written then.
`close()` writes everything plus a shutdown marker; a start that finds no marker at the end
of the log writes an entry saying the previous run stopped uncleanly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from carebase.auth.audit_chain import SHUTDOWN, UNCLEAN_SHUTDOWN
from carebase.auth.audit_detail import entry_values, pack_entries, record_of
from carebase.auth.audit_entry import AuditEntry, AuditTrail
from carebase.errors import Unavailable
from carebase.store import audit_records
from carebase.store.audit_records import AuditRecord, ChainHead, PackedBlock
from carebase.store.sql_store import SqlStore

log = logging.getLogger("carebase.audit")

#: Most entries held in memory; beyond it `record()` refuses (503) instead of growing.
DEFAULT_MAX_BUFFER = 10_000
#: Most entries one transaction writes (a backlog after an outage goes in several).
MAX_BATCH = 2_000
#: How often the search index gets the keys of the blocks written since (seconds), or after
#: how many entries, whichever comes first. Every pass touches index pages all over the
#: (patient-ordered) index, whatever it adds: at a few thousand reads a second, passes a
#: second apart cost about 6.6 µs per entry, five seconds apart about 2.4 (inserted in key
#: order; out of order, 12). Searches scan the blocks not indexed yet, so the entry bound
#: keeps that scan short under heavy load.
INDEX_EVERY_S = 5.0
INDEX_AFTER_ENTRIES = 50_000
#: Wait between retries while the audit store fails (doubling up to the maximum).
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 1.0


def _unavailable(reason: str) -> Unavailable:
    return Unavailable(
        f"audit store unavailable: {reason}; no patient data is served until accesses can "
        "be recorded again, retry shortly",
        headers={"Retry-After": "1"},
    )


@dataclass(slots=True)
class TrailStats:
    """Counters for tests, benchmarks and operators."""

    accepted: int = 0
    written: int = 0
    transactions: int = 0
    #: of those, appended onto the head this trail knew, in one statement
    #: (`audit_records.append_onto`; PostgreSQL)
    quick: int = 0
    failures: int = 0
    lost: int = 0  # entries handed over by `enqueue` with the buffer already full


def to_record(entry: AuditEntry, *, observer: str, site: str | None) -> AuditRecord:
    """An unchained audit log row for `entry` (`audit_chain.link` places it in the chain)."""
    return record_of(entry_values(entry), observer, site)


class DatabaseAuditTrail(AuditTrail):
    """The audit trail of a carebase store (SQLite or PostgreSQL); see the module docstring.

    `start()` checks the previous run's shutdown and starts the writer thread (`record()`
    starts it too if nobody did); `close()` flushes and stops it.
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        flush_ms: float = 5.0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        observer: str = "carebase",
        site: str | None = None,
        on_health: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.store = store
        #: told (healthy, reason) whenever writes start failing or succeed again
        self.on_health = on_health
        self.flush_s = max(flush_ms, 0.0) / 1000
        self.max_buffer = max_buffer
        self.observer, self.site = observer, site
        self.stats = TrailStats()
        #: accepted entries (`audit_detail.entry_values`, or their JSON round trip), oldest
        #: first; the writer packs them into a block (`audit_detail.pack_entries`)
        self._buffer: deque[Sequence[Any]] = deque()
        self._cond = threading.Condition()
        self._healthy = True
        self._error: str | None = None
        self._closing = False
        self._closed = False
        #: the start-up check for an unclean previous shutdown has not succeeded yet
        self._check_pending = True
        #: when the search index last got the keys of the blocks written (monotonic), and
        #: how many entries were written since
        self._indexed_at = float("-inf")
        self._unindexed = 0
        #: the chain's head after this trail's last append (seq, hash), to link the next
        #: block onto without reading it under the lock (PostgreSQL, where that saves three
        #: round trips; on SQLite the one statement cost more CPU than the locked path's
        #: three, 206-219 µs against 192-206 per 17-entry append); None: read it
        self._head: tuple[int, str] | None = None
        self._quick = store.dialect == "postgresql"
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # --- the AuditTrail interface ---------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """Whether the last attempt to write succeeded (False: `record()` refuses)."""
        return self._healthy

    def record(self, entry: AuditEntry) -> None:
        """Buffer `entry` for the writer; raises Unavailable when the audit store is failing,
        the buffer is full, or the trail is closed."""
        if self._thread is None and not self._closed:
            self.start()
        row = entry_values(entry)
        with self._cond:
            if self._closed or self._closing:
                raise _unavailable("the audit trail is shut down")
            if not self._healthy:
                raise _unavailable(self._error or "writes are failing")
            if len(self._buffer) >= self.max_buffer:
                raise _unavailable(f"{self.max_buffer} entries are waiting to be written")
            self._buffer.append(row)
            self.stats.accepted += 1
            if len(self._buffer) == 1:
                self._cond.notify()

    def enqueue(self, rows: Sequence[Sequence[Any]]) -> None:
        """Buffer entries another process already accepted (`audit_process`; their
        `entry_values` as JSON arrays): kept while the store fails, since their requests
        were answered. Only a buffer at ten times its size drops entries, logged and
        counted: the accepting side stops accepting as soon as it hears writes fail, long
        before."""
        if self._thread is None and not self._closed:
            self.start()
        with self._cond:
            room = max(0, 10 * self.max_buffer - len(self._buffer))
            if room < len(rows):
                self.stats.lost += len(rows) - room
                log.error("%d audit entries lost: %d entries wait to be written",
                          len(rows) - room, len(self._buffer))  # fmt: skip
                rows = rows[:room]
            was_empty = not self._buffer
            self._buffer.extend(rows)
            self.stats.accepted += len(rows)
            if was_empty and rows:
                self._cond.notify()

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every entry accepted so far is written; Unavailable if that fails
        within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self.stats.accepted
            self._cond.notify_all()
            while self.stats.written < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    raise _unavailable(self._error or "entries could not be written in time")
                self._cond.wait(min(left, 0.05))

    def close(self, timeout: float = 30.0) -> None:
        """Write every buffered entry and a shutdown marker, then stop the writer."""
        with self._cond:
            if self._closed or self._closing:
                return
            if self._thread is None:
                self._closed = True
                return
            marker = AuditEntry(SHUTDOWN, "E", description="carebase shut down")
            self._buffer.append(entry_values(marker))
            self.stats.accepted += 1
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        thread.join(timeout)
        with self._cond:
            self._closed = True
            lost = len(self._buffer)
        if thread.is_alive() or lost:
            log.error("audit trail closed with %d entries unwritten: %s", lost, self._error)
            raise _unavailable(f"{lost} entries could not be written before shutdown")

    # --- start-up -----------------------------------------------------------------------------
    def start(self) -> None:
        """Note an unclean previous shutdown in the log, then start the writer thread."""
        with self._start_lock:
            if self._thread is not None:
                return
            try:
                self._write([])  # the start-up check alone
            except Exception as exc:  # the store failing at start: the writer retries it
                self._fail(exc)
            thread = threading.Thread(target=self._run, name="carebase-audit", daemon=True)
            self._thread = thread
            thread.start()

    def _unclean_marker(self, head: ChainHead) -> list[Sequence[Any]]:
        """The entry noting an unclean previous shutdown, if the log's last entry says so
        (checked once, with the first append that succeeds)."""
        if not self._check_pending or head.seq == 0 or head.interaction == SHUTDOWN:
            return []
        entry = AuditEntry(
            UNCLEAN_SHUTDOWN,
            "E",
            outcome="4",
            description=(
                f"The previous run did not shut down cleanly (its last entry, seq {head.seq}, "
                "is not a shutdown marker): entries of its last few milliseconds may be lost"
            ),
        )
        return [entry_values(entry)]

    # --- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        retry = RETRY_FIRST_S
        while True:
            with self._cond:
                while not self._buffer and not self._closing and not self._check_pending:
                    self._cond.wait()
                if not self._buffer and self._closing:
                    return  # everything is written
            if self.flush_s and not self._closing and self._healthy:
                time.sleep(self.flush_s)  # let entries of concurrent requests gather
            with self._cond:
                batch = list(islice(self._buffer, MAX_BATCH))
            try:
                self._write(batch)
            except Exception as exc:
                self._fail(exc)
                if self._closing and retry >= RETRY_MAX_S:
                    return  # close() reports what is left
                time.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                continue
            retry = RETRY_FIRST_S
            with self._cond:
                for _ in batch:
                    self._buffer.popleft()
                self.stats.written += len(batch)
                self.stats.transactions += 1
                recovered = not self._healthy
                if recovered:
                    log.warning("audit store writes succeed again; serving resumes")
                self._healthy, self._error = True, None
                self._cond.notify_all()
            if recovered and self.on_health is not None:
                self.on_health(True, None)

    def _write(self, batch: list[Sequence[Any]]) -> None:
        """Append `batch` in one transaction (after the start-up marker, if one is due): on
        PostgreSQL onto the head this trail wrote last, in one statement, while nobody else
        appended since and no index pass is due; else under the lock, reading the head."""

        def build(head: ChainHead) -> PackedBlock | None:
            entries = [*self._unclean_marker(head), *batch]
            if not entries:
                return None
            return pack_entries(entries, head.seq, head.hash, self.observer, self.site)

        now = time.monotonic()
        index = (
            self._closing
            or now - self._indexed_at >= INDEX_EVERY_S
            or self._unindexed + len(batch) >= INDEX_AFTER_ENTRIES
        )
        block: PackedBlock | None = None
        if self._quick and batch and not index and not self._check_pending and self._head:
            seq, hash_ = self._head
            block = pack_entries(batch, seq, hash_, self.observer, self.site)
            if audit_records.append_onto(self.store, block):
                self.stats.quick += 1
            else:
                block = None
        if block is None:
            block = audit_records.append_packed(
                self.store, build, interaction=self._check_pending, index=index
            )
        self._check_pending = False
        if block is not None:
            self._head = (block.last_seq, block.hash)
        if index:
            self._indexed_at, self._unindexed = now, 0
        else:
            self._unindexed += len(batch)

    def _fail(self, exc: Exception) -> None:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        with self._cond:
            turned = self._healthy
            if turned:
                log.error("audit store writes fail; refusing to serve patient data: %s", reason)
            self._healthy, self._error = False, reason
            self.stats.failures += 1
            self._cond.notify_all()
        if turned and self.on_health is not None:
            self.on_health(False, reason)
