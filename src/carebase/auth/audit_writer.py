"""The audit writer process (`python -m carebase.auth.audit_writer`): see `audit_process`.

Reads entries from the socket its server passed it (`--fd`) and feeds them to a
`DatabaseAuditTrail` over its own connection to `--database`; tells the server when writes
fail or recover, answers flush requests once what came before is written, and on close
writes the shutdown marker. If the server goes away without closing (it crashed), what
arrived is still written, without the marker, so the next start notes the unclean stop.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

import orjson

from carebase.auth.audit_detail import ENTRY_FIELDS
from carebase.auth.audit_log import DatabaseAuditTrail
from carebase.auth.audit_process import (
    ACK,
    BATCH,
    CLOSE,
    DATABASE_ENV,
    EXITED,
    FLUSH,
    HEALTHY,
    MAX_MESSAGE,
    NACK,
    UNHEALTHY,
    send_status,
)
from carebase.config import Settings
from carebase.errors import CarebaseError
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore

log = logging.getLogger("carebase.audit")


def serve(sock: socket.socket, trail: DatabaseAuditTrail) -> int:
    """Feed `trail` from `sock` until the server closes it or asks to close; exit status."""
    lock = threading.Lock()  # status messages come from the writer thread and this one

    def tell(kind: bytes, body: bytes = b"") -> None:
        # the server may be gone: what arrived is written all the same
        with lock, contextlib.suppress(OSError):
            send_status(sock, kind, body)

    trail.on_health = lambda ok, reason: tell(
        HEALTHY if ok else UNHEALTHY, b"" if ok else (reason or "writes fail").encode()
    )
    try:
        trail.start()
    except CarebaseError as exc:
        tell(UNHEALTHY, exc.message.encode())
    tell(HEALTHY if trail.healthy else UNHEALTHY)

    def answer(token: bytes) -> None:
        try:
            trail.flush()
            tell(ACK, token)
        except CarebaseError as exc:
            tell(NACK, token + b" " + exc.message.encode())

    while True:
        message = sock.recv(MAX_MESSAGE + 64)
        if not message:  # the server went away without closing: write what came, no marker
            try:
                trail.flush()
            except CarebaseError as exc:
                log.error("audit entries of a server that stopped were not written: %s", exc)
                return 1
            return 0
        kind, body = message[:1], message[1:]
        if kind == BATCH:
            entries = _entries(body)
            if entries:
                trail.enqueue(entries)
        elif kind == FLUSH:
            threading.Thread(target=answer, args=(body,), daemon=True).start()
        elif kind == CLOSE:
            try:
                trail.close()
                tell(ACK, body)
            except CarebaseError as exc:
                tell(NACK, body + b" " + exc.message.encode())
            tell(EXITED)
            return 0


def _entries(body: bytes) -> list[list[Any]]:
    """The entries of a batch (`audit_detail.entry_values` arrays); a malformed batch - never
    sent by a server of this version - is logged and dropped rather than left to fail every
    later write."""
    try:
        entries = orjson.loads(body)
    except orjson.JSONDecodeError:
        entries = None
    if isinstance(entries, list) and all(
        isinstance(v, list) and len(v) == ENTRY_FIELDS for v in entries
    ):
        return entries
    log.error("a malformed batch of audit entries was dropped: %r", body[:200])
    return []


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments the server passes and run the writer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--database", default=os.environ.get(DATABASE_ENV))
    parser.add_argument("--flush-ms", type=float, default=5.0)
    parser.add_argument("--site")
    args = parser.parse_args(argv)
    if not args.database:
        parser.error(f"--database or {DATABASE_ENV} must name the database")
    # Ctrl-C reaches the whole process group and a service manager may signal every process
    # of the service: the writer must outlive its server's shutdown to write what it sent
    # and the shutdown marker. It ends when the server says close, or goes away (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    store = open_store(args.database, Settings.from_env())
    if not isinstance(store, SqlStore):
        raise SystemExit(f"the audit log needs a SQL store, not {type(store).__name__}")
    # what is alive now lives as long as the process: out of the collector's way (rows are
    # made and dropped for every entry; reference counting frees them)
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        return serve(sock, DatabaseAuditTrail(store, flush_ms=args.flush_ms, site=args.site))
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
