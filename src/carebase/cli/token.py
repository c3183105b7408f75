"""`carebase token`: print one bearer access token for a script or an administrator."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.markup import escape

from carebase.auth.principal import Principal
from carebase.auth.roles import permitted_scopes
from carebase.auth.scopes import NON_RESOURCE_SCOPES, ScopeError, parse_scope, validate_scopes
from carebase.auth.tokens import TokenService
from carebase.auth.users import UserDirectory
from carebase.cli.options import (
    DatabaseOption,
    err_console,
    friendly_errors,
    opened_store,
    settings_for,
)
from carebase.cli.users import fail_usage
from carebase.errors import BadRequest, Forbidden, NotFound
from carebase.store.base import Store

#: The longest a CLI token may live (a day): long-lived bearer tokens are a liability.
MAX_TTL = 24 * 60 * 60
#: The subject of tokens made without --user.
CLI_SUBJECT = "carebase-cli"


def _check_patient(store: Store, patient: str) -> None:
    found = store.read("Patient", patient)
    if found is None or found.deleted:
        raise NotFound(f"Patient/{patient} does not exist; check the id", location="patient")


def caller_for(store: Store, username: str, patient: str | None) -> Principal:
    """The token's caller acting as `username`, with `patient` as launch context."""
    account = UserDirectory(store).get(username)
    if account is None:
        raise NotFound(f"There is no user {username!r}", location="user")
    if account.disabled:
        raise Forbidden(f"User {account.username!r} is disabled", location="user")
    if account.role == "patient":
        if patient and patient != account.patient:
            raise Forbidden(
                f"User {account.username!r} is Patient/{account.patient}; a patient's token "
                "is for their own record only",
                location="patient",
            )
        patient = account.patient
    elif patient:
        _check_patient(store, patient)
    return replace(account.principal(), patient=patient)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def token(
        scope: Annotated[
            str,
            typer.Option(
                "--scope",
                help='Space-separated SMART scopes, e.g. "system/*.rs" or '
                '"patient/Observation.rs launch/patient".',
            ),
        ],
        patient: Annotated[
            str | None, typer.Option(help="Patient id: the launch context of patient/ scopes.")
        ] = None,
        user: Annotated[
            str | None,
            typer.Option(help="Act as this user: their role limits the scopes."),
        ] = None,
        ttl: Annotated[
            int | None,
            typer.Option(
                min=1, max=MAX_TTL, help="Lifetime in seconds (default CAREBASE_ACCESS_TOKEN_TTL)."
            ),
        ] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Print one bearer access token. Without --user it is a service token for scripts
        (role service); with --user it carries that user's role and FHIR identity."""
        try:
            requested = validate_scopes(scope)
        except ScopeError as exc:
            raise fail_usage(f"--scope: {exc}") from exc
        if not requested:
            raise fail_usage('--scope is empty; name at least one scope, e.g. "system/*.rs"')
        unknown = [s for s in requested if s not in NON_RESOURCE_SCOPES and not parse_scope(s)]
        if unknown:
            raise fail_usage(
                f"--scope: {' '.join(unknown)} is not a scope carebase knows; use resource "
                "scopes such as system/*.rs or patient/Observation.read, or "
                + " ".join(sorted(NON_RESOURCE_SCOPES))
            )
        settings = settings_for(database)
        if user is not None:
            with opened_store(database) as store:
                store.migrate()
                caller = caller_for(store, user, patient)
        else:
            if patient:
                with opened_store(database) as store:
                    _check_patient(store, patient)
            caller = Principal(subject=CLI_SUBJECT, kind="service", role="service", patient=patient)
        granted = permitted_scopes(caller.role, requested)
        dropped = [s for s in requested if s not in granted]
        with friendly_errors():
            if not granted:
                raise Forbidden(
                    f"No requested scope is allowed for role {caller.role} ({' '.join(requested)})"
                )
            if dropped:
                err_console.print(
                    f"note: role {caller.role} may not hold {escape(' '.join(dropped))}; "
                    f"granted: {escape(' '.join(granted))}"
                )
            if caller.patient is None and any(s.startswith("patient/") for s in granted):
                raise BadRequest("patient/ scopes need a patient context: add --patient ID")
            jwt, _ = TokenService.from_settings(settings).issue(
                subject=caller.subject,
                scopes=granted,
                kind=caller.kind,
                role=caller.role,
                username=caller.username,
                fhir_user=caller.fhir_user,
                patient=caller.patient,
                organization=caller.organization,
                ttl=ttl,
            )
        typer.echo(jwt)
