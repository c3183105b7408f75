"""`carebase migrate`: create or upgrade the database schema."""

from __future__ import annotations

import typer
from rich.console import Console

from carebase.cli.options import DatabaseOption, opened_store
from carebase.store import reindex
from carebase.store.schema import MIGRATIONS


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def migrate(database: DatabaseOption = None) -> None:
        """Create or upgrade the schema of the database."""
        console = Console()
        with opened_store(database) as store:
            applied = store.migrate()
            version = store.schema_version()
            needs_reindex = any(m.needs_reindex for m in MIGRATIONS if m.number in applied)
            stale = needs_reindex and reindex.start(store).remaining > 0
        if applied:
            console.print(f"Applied migrations {applied}; schema is at version {version}.")
        else:
            console.print(f"Schema is up to date (version {version}).")
        if stale:
            console.print(
                "The database already holds resources, which the new index tables do not "
                "cover yet: run `carebase reindex` (full-text search finds nothing until then)."
            )
