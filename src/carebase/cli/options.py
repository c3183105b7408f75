"""Options shared by several commands, and turning errors into clear one-line messages."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from carebase.config import Settings
from carebase.errors import CarebaseError
from carebase.store.base import Store
from carebase.store.factory import open_store

# soft_wrap: an error stays one line however narrow the terminal (or a pipe's 80 columns).
err_console = Console(stderr=True, soft_wrap=True)

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Database URL: sqlite:///PATH or postgresql://... "
        "(default: $CAREBASE_DATABASE_URL, else sqlite:///$CAREBASE_DATA_DIR/carebase.db)",
        show_default=False,
    ),
]


def settings_for(database: str | None, **changes: object) -> Settings:
    """Settings from the environment with the command line's choices on top."""
    return Settings.from_env().with_(database_url=database, **changes)


@contextmanager
def opened_store(database: str | None) -> Iterator[Store]:
    """The store of `--database` (or the configured one), closed afterwards; errors are
    printed as by `friendly_errors`."""
    settings = settings_for(database)
    url = settings.resolved_database_url
    with friendly_errors(url):
        store = open_store(url, settings)
        try:
            yield store
        finally:
            store.close()


@contextmanager
def friendly_errors(database: str = "") -> Iterator[None]:
    """Print carebase and file errors as one red line and exit 1 instead of a traceback."""
    try:
        yield
    except CarebaseError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc
    except (OSError, sqlite3.Error) as exc:
        # A data directory or database file that cannot be created or opened.
        what = f"the database {database}" if database.startswith("sqlite") else "the database"
        err_console.print(f"[red]error:[/red] cannot open {escape(what)}: {escape(str(exc))}")
        raise typer.Exit(1) from exc
