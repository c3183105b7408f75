"""`carebase migrate`: create or upgrade the database schema."""

from __future__ import annotations

import typer
from rich.console import Console

from carebase.cli.options import DatabaseOption, friendly_errors, settings_for
from carebase.store.factory import open_store


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def migrate(database: DatabaseOption = None) -> None:
        """Create or upgrade the schema of the database."""
        console = Console()
        settings = settings_for(database)
        url = settings.resolved_database_url
        with friendly_errors(url):
            store = open_store(url, settings)
            try:
                applied = store.migrate()
                version = store.schema_version()
            finally:
                store.close()
        if applied:
            console.print(f"Applied migrations {applied}; schema is at version {version}.")
        else:
            console.print(f"Schema is up to date (version {version}).")
