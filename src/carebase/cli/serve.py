"""`carebase serve`: run the HTTP server (FHIR API, and later the web app) with uvicorn."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from carebase.auth.keys import KeyRing
from carebase.auth.rate_limiter import parse_rate_limit
from carebase.cli.migrate import reindex_hint
from carebase.cli.options import DatabaseOption, err_console, friendly_errors, settings_for
from carebase.config import Settings
from carebase.errors import CarebaseError
from carebase.store.factory import open_store
from carebase.telehealth.service import bus_kind
from carebase.telehealth.settings import TelehealthSettings


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
        ssl_certfile: Annotated[
            str | None,
            typer.Option(
                help="TLS certificate chain (PEM); serve https. Env: CAREBASE_SSL_CERTFILE.",
                show_default=False,
            ),
        ] = None,
        ssl_keyfile: Annotated[
            str | None,
            typer.Option(
                help="TLS private key (PEM) of the certificate. Env: CAREBASE_SSL_KEYFILE.",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Serve carebase: FHIR API at /fhir, liveness at /healthz."""
        settings = settings_for(
            database,
            host=host,
            port=port,
            workers=workers,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        if dev_no_auth:
            settings = settings.with_(auth_disabled=True)
        run_server(settings, log_level)


def run_server(settings: Settings, log_level: str = "info") -> None:
    """Check the settings, migrate, create the signing keys, and serve until stopped (what
    `carebase serve` does once it has its settings; `carebase demo` serves through it too)."""
    host, port, workers = settings.host, settings.port, settings.workers
    tls_problem = check_tls_files(settings.ssl_certfile, settings.ssl_keyfile)
    if tls_problem:
        err_console.print(f"[red]error:[/red] {escape(tls_problem)}")
        raise typer.Exit(2)
    scheme = "https" if settings.ssl_certfile else "http"
    try:
        parse_rate_limit(settings.auth_rate_limit)
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] CAREBASE_AUTH_RATE_LIMIT: {escape(str(exc))}")
        raise typer.Exit(2) from exc
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
    try:  # the in-process signalling bus cannot serve several workers
        dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        bus_kind(TelehealthSettings.from_env(), dialect, workers)
    except CarebaseError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from exc
    with friendly_errors(url):
        # Migrate once here, before workers start, so they never race on DDL.
        store = open_store(url, settings)
        try:
            applied = store.migrate()
            hint = reindex_hint(store, applied)
        finally:
            store.close()
        # Likewise the token signing keys: created (on first start) before workers fork.
        KeyRing.open(settings.keys_dir)
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
        f"carebase serving on {scheme}://{host}:{port}  (FHIR: {scheme}://{host}:{port}/fhir, "
        f"database: {_describe(url)})"
    )
    # Workers are separate processes: hand them the settings through the environment.
    os.environ["CAREBASE_DATABASE_URL"] = url
    os.environ["CAREBASE_HOST"] = host
    os.environ["CAREBASE_PORT"] = str(port)
    os.environ["CAREBASE_WORKERS"] = str(workers)  # telehealth checks its bus against it
    os.environ["CAREBASE_DEV_NO_AUTH"] = "1" if settings.auth_disabled else "0"
    os.environ["CAREBASE_SSL_CERTFILE"] = settings.ssl_certfile
    os.environ["CAREBASE_SSL_KEYFILE"] = settings.ssl_keyfile
    from carebase.api.app import WORKER_FACTORY  # the app itself: loaded to serve, not for --help

    uvicorn.run(
        WORKER_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        ssl_certfile=settings.ssl_certfile or None,
        ssl_keyfile=settings.ssl_keyfile or None,
    )


def check_tls_files(certfile: str, keyfile: str) -> str | None:
    """Why the TLS certificate/key pair cannot be used (one line), or None when it can.

    Loaded here with the ssl module, so a missing, unreadable or mismatched file is a clear
    message before the server starts rather than a traceback from each worker.
    """
    if not certfile and not keyfile:
        return None
    if not certfile or not keyfile:
        return "--ssl-certfile and --ssl-keyfile go together: give both (or neither, for http)"
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not Path(path).is_file():
            return f"{option} {path}: no such file"
        if not os.access(path, os.R_OK):
            return f"{option} {path}: not readable by this user"
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        return (
            f"cannot use the TLS certificate {certfile} with the key {keyfile}: {exc} "
            "(both must be PEM, and the key must belong to the certificate)"
        )
    return None


def _describe(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url
    return url.split("@")[-1] if "@" in url else url
