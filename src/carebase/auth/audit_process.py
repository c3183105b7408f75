"""The audit trail with its writer in a process of its own, off the request-serving core.

Turning entries into hash-chained rows and writing them costs more CPU than a cached read
does; in a writer thread it competes with the requests for the interpreter lock. Here the
server process only encodes each entry (`audit_detail.entry_message`) and sends it over a
Unix `SOCK_SEQPACKET` socket to a child process (`python -m carebase.auth.audit_writer`)
that runs the `DatabaseAuditTrail` over its own connection to the same database.

The group-commit window (`flush_ms`) is kept here, in the server: the entries of one window
go together in one message that is never split, and the child writes each message as it
arrives (its trail runs with no window of its own), so a message is one commit. Sending per
window rather than per entry (or per millisecond, as before) spares the system calls and
wake-ups of both processes and the writer's hand-over between its receiving and its writing
thread: at a few thousand reads a second they cost more CPU per entry than the rest of the
audit work together. The longest an entry waits to be committed stays one window plus the
commit.

The guarantees stay those of `audit_log`: an entry the socket accepted is in the kernel's
buffer, which outlives a crash of the server process, and the child writes it (a crash of
the server loses at most the entries of its last window, `flush_ms`: 5 ms by default); the child
reports when writes fail or recover, and from then `record()` refuses (503) until they
succeed again, while the child keeps what it already has; `flush()` and `close()` wait for
the child to say everything sent before is written (close adds the shutdown marker). If the
child dies, `record()` refuses, and a new child is started; its first append notes the
unclean stop, as a restarted server would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import replace

from carebase.auth.audit_detail import entry_message
from carebase.auth.audit_entry import AuditEntry, AuditTrail
from carebase.errors import Unavailable

log = logging.getLogger("carebase.audit")

#: Message kinds. Server to writer: a Batch of entries (a JSON array of `entry_message`s),
#: a Flush request (with a token), Close.
#: Writer to server: Healthy, Unhealthy (with the reason), flush Acknowledged (token),
#: flush Not done (token and reason), and eXited cleanly.
BATCH, FLUSH, CLOSE = b"B", b"F", b"C"
HEALTHY, UNHEALTHY, ACK, NACK, EXITED = b"H", b"U", b"A", b"N", b"X"
#: The environment variable the writer process finds its database URL in.
DATABASE_ENV = "CAREBASE_AUDIT_WRITER_DATABASE_URL"
#: Largest message either side sends, and the most entries one batch holds.
MAX_MESSAGE = 64 * 1024
MAX_BATCH_BYTES, MAX_BATCH_ENTRIES = MAX_MESSAGE - 16, 256
#: Largest entry (its query string is cut to fit).
MAX_ENTRY = MAX_BATCH_BYTES - 8
#: How long the server waits for a writer process to start and report.
START_TIMEOUT_S = 30.0
RESTART_DELAY_S = 1.0


def _unavailable(reason: str) -> Unavailable:
    return Unavailable(
        f"audit store unavailable: {reason}; no patient data is served until accesses can "
        "be recorded again, retry shortly",
        headers={"Retry-After": "1"},
    )


class ProcessAuditTrail(AuditTrail):
    """The durable trail of the database at `url`, written by a child process."""

    def __init__(
        self,
        url: str,
        *,
        flush_ms: float = 5.0,
        site: str | None = None,
        max_backlog: int = 10_000,
    ) -> None:
        self.url, self.flush_ms, self.site = url, flush_ms, site
        #: how long entries recorded on an event loop wait to be sent together (seconds): the
        #: group-commit window, not one loop turn, since requests that await the database
        #: (PostgreSQL) finish in turns of their own, one entry each
        self.send_delay_s = max(flush_ms, 0.0) / 1000
        self.max_backlog = max_backlog
        self._cond = threading.Condition()
        self._healthy = False
        self._error: str | None = "the audit writer process has not started"
        self._closing = self._closed = False
        self._sock: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._generation = 0  # which child the receiver thread listens to
        self._acks: dict[int, str | None] = {}  # flush token -> None (done) or failure reason
        self._next_token = 0
        self._exited = False
        #: entries recorded since the last send (each its JSON), and their size in bytes
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._send_lock = threading.Lock()
        #: messages the socket had no room for (and their entry counts), in order; a sender
        #: thread drains them
        self._backlog: deque[tuple[bytes, int]] = deque()
        self._backlog_entries = 0
        self._start_lock = threading.Lock()

    # --- the AuditTrail interface ---------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """Whether the writer process runs and its last write succeeded."""
        return self._healthy

    def record(self, entry: AuditEntry) -> None:
        """Hand `entry` to the writer process; Unavailable when it cannot store entries.

        Entries recorded on an event loop go out together `flush_ms` after the first of them
        (one message, one wake-up and one commit of the writer, for the requests of that
        time); elsewhere, and once a batch is full, at once.
        """
        if self._sock is None and not self._closed:
            self.start()
        if not self._healthy or self._sock is None or self._closing:
            raise _unavailable(self._error or "the audit trail is shut down")
        part = entry_message(entry)
        if len(part) > MAX_ENTRY:
            part = entry_message(_shortened(entry, len(part) - MAX_ENTRY))
        with self._send_lock:
            if self._pending_size + len(part) + 1 > MAX_BATCH_BYTES:
                self._send_pending()
            if self._backlog_entries >= self.max_backlog:
                raise _unavailable(f"{self._backlog_entries} entries are waiting to be written")
            self._pending.append(part)
            self._pending_size += len(part) + 1
            if len(self._pending) >= MAX_BATCH_ENTRIES:
                self._send_pending()
                return
            if len(self._pending) > 1:
                return  # a send is already due
        try:
            asyncio.get_running_loop().call_later(self.send_delay_s, self.send_pending)
        except RuntimeError:  # not on an event loop: nothing to gather with
            self.send_pending()

    def send_pending(self) -> None:
        """Send the entries recorded and not yet sent (one message)."""
        with self._send_lock:
            self._send_pending()

    def _send_pending(self) -> None:
        # under _send_lock: entries leave in the order they were recorded
        if not self._pending:
            return
        message = BATCH + b"[" + b",".join(self._pending) + b"]"
        count = len(self._pending)
        self._pending, self._pending_size = [], 0
        sock = self._sock
        if not self._backlog and sock is not None:
            try:
                sock.send(message, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                pass  # the writer is behind: queue it (in order) for the sender thread
            except OSError as exc:  # kept for the writer `_restart` brings
                self._lost_child(f"the audit writer process is gone ({exc})")
        with self._cond:
            self._backlog.append((message, count))
            self._backlog_entries += count
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every entry recorded so far is written; Unavailable otherwise."""
        self._request(FLUSH, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Have the writer write everything and a shutdown marker, then stop it."""
        with self._cond:
            if self._closed or self._closing:
                return
            self._closing = True
            if self._sock is None:
                self._closed = True
                return
        try:
            self._request(CLOSE, timeout)
        finally:
            with self._cond:
                self._closed = True
            child = self._child
            if child is not None:
                try:
                    child.wait(timeout)
                except subprocess.TimeoutExpired:
                    child.kill()
            if self._sock is not None:
                self._sock.close()

    # --- starting the writer ----------------------------------------------------------------
    def start(self) -> None:
        """Start the writer process and wait until it reports (healthy or not)."""
        with self._start_lock:
            if self._sock is not None or self._closed:
                return
            self._spawn()
            threading.Thread(target=self._send_backlog, name="carebase-audit-send",
                             daemon=True).start()  # fmt: skip

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        # the window is kept here (`record`): the writer commits each message as it comes
        command = [sys.executable, "-m", "carebase.auth.audit_writer", "--fd",
                   str(theirs.fileno()), "--flush-ms", "0"]  # fmt: skip
        if self.site:
            command += ["--site", self.site]
        # the database URL (it may hold a password) goes in the environment, not in argv,
        # which every local user can read
        env = {**os.environ, DATABASE_ENV: self.url}
        child = subprocess.Popen(command, pass_fds=(theirs.fileno(),), close_fds=True, env=env)
        theirs.close()
        with self._cond:
            self._generation += 1
            self._child, self._exited = child, False
            self._error = "the audit writer process is starting"
            generation = self._generation
        threading.Thread(target=self._receive, args=(ours, generation),
                         name="carebase-audit-status", daemon=True).start()  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        with self._cond:
            while not self._healthy and self._error == "the audit writer process is starting":
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        # blocking, for the receiver thread: sends pass MSG_DONTWAIT instead
        self._sock = ours

    # --- threads --------------------------------------------------------------------------
    def _receive(self, sock: socket.socket, generation: int) -> None:
        """Listen to one writer process: health, acknowledgements, and its end."""
        while True:
            try:
                message = _recv(sock)
            except OSError:
                message = b""
            if not message:
                break
            kind, body = message[:1], message[1:]
            with self._cond:
                if kind == HEALTHY:
                    self._healthy, self._error = True, None
                elif kind == UNHEALTHY:
                    self._healthy, self._error = False, body.decode("utf-8", "replace")
                elif kind in (ACK, NACK):
                    token, _, reason = body.partition(b" ")
                    self._acks[int(token)] = reason.decode() if kind == NACK else None
                elif kind == EXITED:
                    self._exited = True
                self._cond.notify_all()
        if generation == self._generation and not self._closing:
            self._lost_child("the audit writer process stopped")
            threading.Thread(target=self._restart, name="carebase-audit-restart",
                             daemon=True).start()  # fmt: skip

    def _restart(self) -> None:
        time.sleep(RESTART_DELAY_S)
        with self._start_lock:
            if self._closing or self._closed:
                return
            old = self._sock
            self._sock = None
            if old is not None:
                old.close()
            log.warning("starting a new audit writer process")
            self._spawn()

    def _lost_child(self, reason: str) -> None:
        with self._cond:
            if self._healthy:
                log.error("%s; refusing to serve patient data until it is back", reason)
            self._healthy, self._error = False, reason
            self._cond.notify_all()

    def _send_backlog(self) -> None:
        """Send queued entries, in order, as the writer makes room."""
        while True:
            with self._cond:
                while not self._backlog and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                message, count = self._backlog[0]
            sock = self._sock
            try:
                if sock is None:
                    raise BlockingIOError
                sock.send(message, socket.MSG_DONTWAIT)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                time.sleep(0.05)  # the child is gone: `_restart` brings a new one
                continue
            with self._cond:
                self._backlog.popleft()
                self._backlog_entries -= count
                self._cond.notify_all()

    def _request(self, kind: bytes, timeout: float) -> None:
        """Send FLUSH or CLOSE after everything queued, and wait for the writer's answer."""
        deadline = time.monotonic() + timeout
        self.send_pending()
        with self._cond:
            while self._backlog:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _unavailable(f"{len(self._backlog)} entries could not be handed over")
                self._cond.wait(left)
            self._next_token += 1
            token = self._next_token
        sock = self._sock
        if sock is None:
            raise _unavailable(self._error or "the audit writer is not running")
        message = kind + str(token).encode()
        while True:
            try:
                sock.send(message, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _unavailable("the audit writer does not take messages") from None
                time.sleep(0.001)
            except OSError as exc:
                raise _unavailable(self._error or "the audit writer is gone") from exc
        with self._cond:
            while token not in self._acks and not (kind == CLOSE and self._exited):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _unavailable(self._error or "entries could not be written in time")
                self._cond.wait(left)
            failure = self._acks.pop(token, None)
        if failure:
            raise _unavailable(failure)


def _recv(sock: socket.socket) -> bytes:
    return sock.recv(MAX_MESSAGE + 64)


def _shortened(entry: AuditEntry, excess: int) -> AuditEntry:
    """`entry` with its query string cut by `excess` characters (and marked as cut)."""
    query = entry.query or ""
    keep = max(0, len(query) - excess - 64)
    return replace(entry, query=query[:keep] + " ...[cut to fit the audit message size]")


def send_status(sock: socket.socket, kind: bytes, body: bytes = b"") -> None:
    """Send one status message from the writer process (blocking: the server reads them)."""
    sock.send(kind + body[:MAX_MESSAGE])
