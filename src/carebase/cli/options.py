"""Options shared by several commands, and turning errors into clear one-line messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console

from carebase.config import Settings
from carebase.errors import CarebaseError

err_console = Console(stderr=True)

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
def friendly_errors() -> Iterator[None]:
    """Print carebase errors as one red line and exit 1 instead of a traceback."""
    try:
        yield
    except CarebaseError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
