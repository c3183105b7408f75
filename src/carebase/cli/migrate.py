"""`carebase migrate`: create or upgrade the database schema."""

from __future__ import annotations

import typer
from rich.console import Console

from carebase.cli.options import DatabaseOption, opened_store
from carebase.store import reindex
from carebase.store.base import Store
from carebase.store.schema import MIGRATIONS


def reindex_hint(store: Store, applied: list[int]) -> str | None:
    """What to tell the user when `applied` added index tables that existing resources are
    not in yet (None when nothing needs a reindex)."""
    needs_reindex = any(m.needs_reindex for m in MIGRATIONS if m.number in applied)
    if not needs_reindex or reindex.start(store).remaining == 0:
        return None
    return (
        "The database already holds resources, which the new index tables do not cover "
        "yet: run `carebase reindex` (full-text search finds nothing until then)."
    )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def migrate(database: DatabaseOption = None) -> None:
        """Create or upgrade the schema of the database."""
        console = Console()
        with opened_store(database) as store:
            applied = store.migrate()
            version = store.schema_version()
            hint = reindex_hint(store, applied)
        if applied:
            console.print(f"Applied migrations {applied}; schema is at version {version}.")
        else:
            console.print(f"Schema is up to date (version {version}).")
        if hint:
            console.print(hint)
