"""`carebase clients`: register, list and disable OAuth / SMART client applications."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carebase.auth.clients import CLIENT_KINDS, ClientRegistry, load_jwks
from carebase.cli.options import DatabaseOption, err_console, opened_store
from carebase.store.oauth_records import OAuthRecords

clients_app = typer.Typer(
    name="clients", help="Register and manage OAuth client applications.", no_args_is_help=True
)


def _registry(store: object) -> ClientRegistry:
    return ClientRegistry(OAuthRecords(store))  # type: ignore[arg-type]


@clients_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name users see on the consent screen.")],
    kind: Annotated[
        str, typer.Option("--kind", help=f"One of: {', '.join(CLIENT_KINDS)}.")
    ] = "public",
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option(
            "--redirect-uri",
            help="An exact redirect URI (https, or http on localhost); repeat for several.",
        ),
    ] = None,
    scope: Annotated[
        str, typer.Option("--scope", help='The scopes it may ask for, e.g. "openid patient/*.rs".')
    ] = "",
    jwks: Annotated[
        str | None,
        typer.Option(
            "--jwks", help="Its public JWKS (a file, or inline JSON) for private_key_jwt."
        ),
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Register a client; prints its client_id (and, once, a confidential client's secret)."""
    console = Console()
    with opened_store(database) as store:
        store.migrate()
        keys = load_jwks(jwks) if jwks is not None else None
        client, secret = _registry(store).register(
            name, kind, redirect_uris=redirect_uri or [], scopes=scope, jwks=keys
        )
    console.print(f"client_id: {client.client_id}", highlight=False)
    if secret is not None:
        console.print(f"client_secret: {secret}", highlight=False)
        err_console.print(
            "Store the secret now: it is shown only this once (carebase keeps only its hash)."
        )


@clients_app.command("list")
def list_clients(database: DatabaseOption = None) -> None:
    """List the registered clients."""
    console = Console()
    with opened_store(database) as store:
        store.migrate()
        clients = _registry(store).all()
    if not clients:
        console.print("No clients registered; add one with `carebase clients add`.")
        return
    table = Table()
    # ids are copied from here: never cut them short, fold the other columns instead
    table.add_column("client_id", no_wrap=True, min_width=22)
    for header in ("name", "kind", "status", "redirect URIs", "scopes"):
        table.add_column(header, overflow="fold")
    for c in clients:
        table.add_row(
            c.client_id,
            escape(c.name),
            c.kind,
            "disabled" if c.disabled else "enabled",
            escape("\n".join(c.redirect_uris)),
            escape(" ".join(c.scopes)),
        )
    console.print(table)


@clients_app.command("disable")
def disable(
    client_id: Annotated[str, typer.Argument(help="The client to disable.")],
    database: DatabaseOption = None,
) -> None:
    """Disable a client: it can no longer authorize users, get or refresh tokens."""
    with opened_store(database) as store:
        store.migrate()
        found = _registry(store).disable(client_id)
    if not found:
        err_console.print(f"[red]error:[/red] no client with client_id {escape(client_id)!r}")
        raise typer.Exit(1)
    Console().print(f"Client {client_id} is disabled.", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command group to the app."""
    app.add_typer(clients_app)
