"""`carebase serve`: run the HTTP server (FHIR API, and later the web app) with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from carebase.cli.migrate import reindex_hint
from carebase.cli.options import DatabaseOption, err_console, friendly_errors, settings_for
from carebase.store.factory import open_store


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def serve(
        database: DatabaseOption = None,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
        workers: Annotated[int, typer.Option(help="Worker processes (PostgreSQL only).")] = 1,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
        dev_no_auth: Annotated[
            bool,
            typer.Option(
                "--dev-no-auth",
                help="DEVELOPMENT ONLY: serve /fhir without authentication or access control "
                "(same as CAREBASE_DEV_NO_AUTH=1).",
            ),
        ] = False,
    ) -> None:
        """Serve carebase: FHIR API at /fhir, liveness at /healthz."""
        settings = settings_for(database, host=host, port=port, workers=workers)
        if dev_no_auth:
            settings = settings.with_(auth_disabled=True)
        url = settings.resolved_database_url
        if workers < 1:
            err_console.print("[red]error:[/red] --workers must be at least 1")
            raise typer.Exit(2)
        if workers > 1 and url.startswith("sqlite"):
            err_console.print(
                "[red]error:[/red] --workers > 1 needs PostgreSQL: SQLite allows one writer at a "
                "time, and several server processes on one SQLite file would queue on its lock. "
                "Use --database postgresql://... or run one worker."
            )
            raise typer.Exit(2)
        with friendly_errors(url):
            # Migrate once here, before workers start, so they never race on DDL.
            store = open_store(url, settings)
            try:
                applied = store.migrate()
                hint = reindex_hint(store, applied)
            finally:
                store.close()
        console = Console()
        if settings.auth_disabled:
            err_console.print(
                "[bold red]WARNING: authentication and access control are DISABLED "
                "(--dev-no-auth / CAREBASE_DEV_NO_AUTH). Development only: anyone who can "
                "reach this port can read and change every record.[/bold red]"
            )
        if applied:
            console.print(f"Database migrated ({applied}).")
        if hint:
            console.print(hint)
        console.print(
            f"carebase serving on http://{host}:{port}  (FHIR: http://{host}:{port}/fhir, "
            f"database: {_describe(url)})"
        )
        # Workers are separate processes: hand them the settings through the environment.
        os.environ["CAREBASE_DATABASE_URL"] = url
        os.environ["CAREBASE_HOST"] = host
        os.environ["CAREBASE_PORT"] = str(port)
        os.environ["CAREBASE_DEV_NO_AUTH"] = "1" if settings.auth_disabled else "0"
        uvicorn.run(
            "carebase.api.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,
            proxy_headers=False,
        )


def _describe(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url
    return url.split("@")[-1] if "@" in url else url
