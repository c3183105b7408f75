"""A real carebase server for the browser tests: uvicorn in a thread of the test process,
over a SQLite store with two synthetic patients and the world's users."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from web_helpers import FAST
from web_world import World, build_world

from carebase.api.app import create_app
from carebase.auth.audit_log import DatabaseAuditTrail
from carebase.auth.users import UserDirectory
from carebase.config import Settings
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(directory: Path, keys: Path) -> Iterator[tuple[str, World, UserDirectory]]:
    """(base URL, world, user directory) of a server running until the block ends."""
    import shutil

    store = open_store(f"sqlite:///{directory / 'carebase.db'}")
    store.migrate()
    assert isinstance(store, SqlStore)
    data = directory / "data"
    shutil.copytree(keys, data / "keys")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(data_dir=data, base_url=f"{base}/fhir")
    trail = DatabaseAuditTrail(store, flush_ms=2, site=f"{base}/fhir")
    app = create_app(settings, store, audit=trail)
    users = app.state.user_directory = UserDirectory(store, passwords=FAST)
    world = build_world(store, users)
    trail.start()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield base, world, users
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        trail.close()
        store.close()
