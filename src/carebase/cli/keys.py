"""`carebase keys ...`: list and rotate the token signing keys."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from carebase.auth.keys import KEPT_KEYS, KeyRing
from carebase.cli.options import friendly_errors, settings_for

app = typer.Typer(
    name="keys", help="Token signing keys: list them, rotate them.", no_args_is_help=True
)


def _ring() -> KeyRing:
    return KeyRing.open(settings_for(None).keys_dir)


@app.command("list")
def list_keys() -> None:
    """Show the kept keys: id (kid), when created, which one signs new tokens."""
    with friendly_errors():
        ring = _ring()
    table = Table("kid", "created", "active")
    for key in ring.kept():
        created = datetime.fromtimestamp(key.created, UTC)
        table.add_row(
            key.kid, f"{created:%Y-%m-%d %H:%M:%S} UTC", "yes" if key is ring.active else ""
        )
    Console().print(table)


@app.command()
def rotate() -> None:
    """Make a new key active. Tokens signed with the previous keys stay valid until they
    expire; only the newest keys are kept."""
    with friendly_errors():
        key = _ring().rotate()
    Console().print(
        f"New active signing key {key.kid}; the {KEPT_KEYS - 1} previous keys still verify "
        "tokens until they expire."
    )


def register(main: typer.Typer) -> None:
    """Add the `keys` group to the app."""
    main.add_typer(app)
