"""Open the store a database URL names (sqlite:///PATH or postgresql://...)."""

from __future__ import annotations

from carebase.config import Settings
from carebase.errors import StorageError
from carebase.store.base import Store
from carebase.store.body_cipher import BodyCipher
from carebase.store.sql_store import SqlStore


def open_store(url: str, settings: Settings | None = None) -> Store:
    """A Store for `url`; raises StorageError for an unknown scheme or unreachable database."""
    settings = settings or Settings()
    cipher = BodyCipher.from_settings(settings)  # before connecting: a bad key fails fast
    store: SqlStore
    if url.startswith("sqlite:///"):
        from carebase.store.sqlite import SQLiteStore

        store = SQLiteStore(url, statement_timeout_ms=settings.statement_timeout_ms)
    elif url.startswith(("postgresql://", "postgres://")):
        from carebase.store.postgres import PostgresStore

        store = PostgresStore(
            url, pool_size=settings.pool_size, statement_timeout_ms=settings.statement_timeout_ms
        )
    else:
        raise StorageError(
            f"Unsupported database URL {url.split('://')[0]!r}: use sqlite:///PATH or "
            "postgresql://..."
        )
    store.cipher = cipher
    return store
