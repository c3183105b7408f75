"""`carebase users ...`: create logins, set passwords, enrol TOTP, disable, enable, unlock."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carebase.auth.principal import ROLES
from carebase.auth.users import User, UserDirectory
from carebase.cli.options import DatabaseOption, err_console, opened_store

app = typer.Typer(
    name="users",
    help="Manage logins: add users, set passwords, enrol TOTP, disable, enable, unlock.",
    no_args_is_help=True,
)

UsernameArg = Annotated[str, typer.Argument(help="The login name (case does not matter).")]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (for scripts).",
    ),
]


@contextmanager
def opened_directory(database: str | None) -> Iterator[UserDirectory]:
    """The UserDirectory of the database (migrated first); errors as one line, exit 1."""
    with opened_store(database) as store:
        store.migrate()
        yield UserDirectory(store)


def fail_usage(message: str) -> typer.Exit:
    """Print a usage error as one line; the caller raises the returned exit (code 2)."""
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


def read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or asked twice on a terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
        if not password:
            raise fail_usage("--password-stdin read no password from standard input")
        return password
    if not sys.stdin.isatty():
        raise fail_usage("no terminal to ask for the password on; pipe it in with --password-stdin")
    asked: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return asked


def report_console() -> Console:
    """Standard output: the terminal's width, or wide enough for tables when piped."""
    console = Console(soft_wrap=True)
    return console if console.is_terminal else Console(soft_wrap=True, width=200)


def _status(user: User) -> str:
    if user.disabled:
        return "disabled"
    if user.locked_until and user.locked_until > datetime.now(UTC):
        return f"locked until {user.locked_until:%H:%M:%S} UTC"
    return "active"


@app.command()
def add(
    username: UsernameArg,
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")],
    patient: Annotated[
        str | None, typer.Option(help="Patient id (role patient): the user's own record.")
    ] = None,
    practitioner: Annotated[
        str | None,
        typer.Option(help="Existing Practitioner id (staff roles); default: create one."),
    ] = None,
    organization: Annotated[
        str | None,
        typer.Option(help="Organization id whose patients a clinician or nurse sees."),
    ] = None,
    name: Annotated[str | None, typer.Option(help='Full name, e.g. "Ada Lovelace".')] = None,
    password_stdin: PasswordStdinOption = False,
    database: DatabaseOption = None,
) -> None:
    """Create a login. Staff get a Practitioner resource as their FHIR identity."""
    if role not in ROLES:
        raise fail_usage(f"role {role!r} is not known; use one of {', '.join(ROLES)}")
    password = read_password(password_stdin)
    with opened_directory(database) as directory:
        user = directory.add(
            username,
            role,
            password,
            patient=patient,
            practitioner=practitioner,
            organization=organization,
            name=name,
        )
    identity = f" as {user.fhir_user}" if user.fhir_user else ""
    report_console().print(f"Added user {escape(user.username)} ({user.role}){escape(identity)}.")


@app.command("list")
def list_users(database: DatabaseOption = None) -> None:
    """Show every user with role, FHIR identity, TOTP and status."""
    with opened_directory(database) as directory:
        users = directory.list()
    table = Table("username", "role", "fhirUser", "organization", "TOTP", "status", "created")
    for user in users:
        table.add_row(
            escape(user.username),
            user.role,
            escape(user.fhir_user or ""),
            escape(user.organization or ""),
            "yes" if user.totp_enabled else "no",
            _status(user),
            f"{user.created:%Y-%m-%d %H:%M}" if user.created else "",
        )
    report_console().print(table if users else "No users yet; add one with `carebase users add`.")


@app.command("set-password")
def set_password(
    username: UsernameArg,
    password_stdin: PasswordStdinOption = False,
    database: DatabaseOption = None,
) -> None:
    """Set a new password; clears a lockout and signs the user out everywhere."""
    password = read_password(password_stdin)
    with opened_directory(database) as directory:
        directory.set_password(username, password)
    report_console().print(f"Password of {escape(username)} changed; their sessions are ended.")


@app.command()
def totp(username: UsernameArg, database: DatabaseOption = None) -> None:
    """Enrol a new TOTP second factor (required from the next login on). Prints the secret,
    the otpauth URI and 10 recovery codes ONCE: hand them to the user."""
    with opened_directory(database) as directory:
        enrollment = directory.enroll_totp(username, activate=True)
    console = report_console()
    console.print(f"TOTP enrolled for {escape(username)}. Shown once; hand these to the user.")
    console.print(f"secret: {enrollment.secret}")
    console.print(f"uri:    {escape(enrollment.uri)}")
    console.print("recovery codes (each works once):")
    for code in enrollment.recovery_codes:
        console.print(f"  {code}")


@app.command("reset-totp")
def reset_totp(username: UsernameArg, database: DatabaseOption = None) -> None:
    """Remove the user's TOTP and recovery codes (a lost phone); enrol again afterwards."""
    with opened_directory(database) as directory:
        directory.reset_totp(username)
    report_console().print(
        f"TOTP of {escape(username)} removed; their password alone signs in now."
    )


@app.command()
def disable(username: UsernameArg, database: DatabaseOption = None) -> None:
    """Refuse every login of the user and end their sessions."""
    with opened_directory(database) as directory:
        directory.disable(username)
    report_console().print(f"User {escape(username)} disabled.")


@app.command()
def enable(username: UsernameArg, database: DatabaseOption = None) -> None:
    """Allow a disabled user to log in again."""
    with opened_directory(database) as directory:
        directory.enable(username)
    report_console().print(f"User {escape(username)} enabled.")


@app.command()
def unlock(username: UsernameArg, database: DatabaseOption = None) -> None:
    """End a lockout after failed logins now."""
    with opened_directory(database) as directory:
        directory.unlock(username)
    report_console().print(f"User {escape(username)} unlocked.")


def register(main: typer.Typer) -> None:
    """Add the `users` group to the app."""
    main.add_typer(app)
