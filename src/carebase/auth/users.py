"""Login accounts: users with roles and FHIR identities, passwords, TOTP, lockout.

`UserDirectory(store)` is the one way to create, change and authenticate users; the rows live
in `store/accounts.py`. Failure messages never say whether a username exists: an unknown
username costs the same password hash and gets the same message and the same lockout as a
wrong password.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carebase.auth import lockout, totp
from carebase.auth.passwords import Passwords, check_policy
from carebase.auth.principal import ROLES, Principal
from carebase.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from carebase.store.accounts import AccountRecords, UserRow
from carebase.store.base import Store, Transaction
from carebase.store.ids import new_id
from carebase.store.sql_store import SqlStore

#: Lower-case letters, digits and . _ @ - (an e-mail address works), 1 to 64 characters.
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
#: Roles whose FHIR identity is a Practitioner resource.
PRACTITIONER_ROLES = ("admin", "clinician", "nurse", "front-desk")
#: Roles that may belong to an Organization (whose patients they see).
ORGANIZATION_ROLES = ("clinician", "nurse")
BAD_CREDENTIALS = "The username or password is not right"
BAD_SECOND_FACTOR = (
    "The code is not right or was already used; enter the current code from the "
    "authenticator app, or one of the recovery codes"
)
#: Identifier system of the Practitioner resources created for users.
USERNAME_SYSTEM = "urn:carebase:username"


@dataclass(frozen=True, slots=True)
class User:
    """A login account as the rest of carebase sees it (no secrets)."""

    id: str
    username: str
    role: str
    fhir_user: str | None
    patient: str | None
    organization: str | None
    totp_enabled: bool
    disabled: bool
    name: str | None = None
    locked_until: datetime | None = None
    created: datetime | None = None

    def principal(self, scopes: frozenset[str] = frozenset()) -> Principal:
        """This user as the caller of a request (a browser session or a token)."""
        return Principal(
            subject=self.id,
            kind="user",
            role=self.role,
            username=self.username,
            fhir_user=self.fhir_user,
            patient=self.patient,
            organization=self.organization,
            scopes=scopes,
        )


@dataclass(frozen=True, slots=True)
class TotpEnrollment:
    """What a user needs once to set up TOTP: shown at enrolment, never stored in clear."""

    secret: str
    uri: str
    recovery_codes: list[str]


class SecondFactorRequired(Unauthorized):
    """The password was right; the user has TOTP, so a code is needed too."""

    def __init__(self, user: User) -> None:
        super().__init__("Enter the code from the authenticator app")
        self.user = user


def normalise_username(username: str) -> str:
    """The stored form of a username (trimmed, lower case); BadRequest when malformed."""
    name = username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise BadRequest(
            f"Username {username!r} is not valid: use 1 to 64 lower-case letters, digits and "
            ". _ @ -, starting with a letter or digit",
            location="username",
        )
    return name


def _instant(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        username=row.username,
        role=row.role,
        fhir_user=row.fhir_user,
        patient=row.patient_id,
        organization=row.organization_id,
        totp_enabled=row.totp_secret is not None,
        disabled=row.disabled,
        name=row.display_name,
        locked_until=_instant(row.locked_until),
        created=_instant(row.created),
    )


def practitioner_for(username: str, name: str | None) -> dict[str, Any]:
    """A minimal Practitioner resource for a user without one."""
    human: dict[str, Any] = {"text": name or username}
    parts = (name or "").split()
    if len(parts) >= 2:
        human.update(family=parts[-1], given=parts[:-1])
    return {
        "resourceType": "Practitioner",
        "active": True,
        "identifier": [{"system": USERNAME_SYSTEM, "value": username}],
        "name": [human],
    }


def _require(tx: Transaction, type_: str, id_: str, location: str) -> None:
    found = tx.read(type_, id_)
    if found is None or found.deleted:
        raise BadRequest(
            f"{type_}/{id_} does not exist; create it first or check the id", location=location
        )


class UserDirectory:
    """Creates, changes and authenticates the users stored in one store."""

    def __init__(
        self,
        store: Store,
        *,
        passwords: Passwords | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(store, SqlStore):
            raise TypeError("UserDirectory needs a SQL store")
        self.store = store
        self.records = AccountRecords(store)
        self.passwords = passwords or Passwords()
        self.clock = clock
        self._phantoms = lockout.PhantomLockouts()

    # --- reading -----------------------------------------------------------------------------
    def get(self, username: str) -> User | None:
        """The user with this username (any case), or None."""
        try:
            name = normalise_username(username)
        except BadRequest:
            return None
        row = self.records.user_by_username(name)
        return _user(row) if row else None

    def by_id(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        row = self.records.user_by_id(user_id)
        return _user(row) if row else None

    def list(self) -> list[User]:
        """Every user, by username."""
        return [_user(r) for r in self.records.list_users()]

    def _row(self, username: str) -> UserRow:
        row = self.records.user_by_username(normalise_username(username))
        if row is None:
            raise NotFound(f"There is no user {username!r}", location="username")
        return row

    # --- creating ----------------------------------------------------------------------------
    def add(
        self,
        username: str,
        role: str,
        password: str | None = None,
        *,
        patient: str | None = None,
        practitioner: str | None = None,
        organization: str | None = None,
        name: str | None = None,
    ) -> User:
        """Create a user, and its Practitioner resource when it needs one and none is given.

        A `patient` user is linked to an existing Patient; admin, clinician, nurse and
        front-desk users to a Practitioner (`practitioner`, which must exist, or a new one
        named after them); clinicians and nurses may belong to an existing `organization`.
        Everything is written in one transaction: a refused user leaves nothing behind.
        """
        username = normalise_username(username)
        if role not in ROLES:
            raise BadRequest(
                f"Role {role!r} is not known; use one of {', '.join(ROLES)}", location="role"
            )
        if role == "patient" and not patient:
            raise BadRequest("A patient user needs the id of their Patient", location="patient")
        if patient and role != "patient":
            raise BadRequest("Only a patient user is linked to a Patient", location="patient")
        if practitioner and role not in PRACTITIONER_ROLES:
            raise BadRequest(
                f"Only {', '.join(PRACTITIONER_ROLES)} users are linked to a Practitioner",
                location="practitioner",
            )
        if organization and role not in ORGANIZATION_ROLES:
            raise BadRequest(
                f"Only {' and '.join(ORGANIZATION_ROLES)} users belong to an Organization",
                location="organization",
            )
        if password is not None:
            check_policy(password, username)
        # Hash before the write transaction: it takes a while and SQLite has one writer.
        hashed = self.passwords.hash(password) if password is not None else None
        now = int(self.clock() * 1000)
        with self.store.transaction() as tx:
            if self.records.user_by_username(username, tx.cursor):  # type: ignore[attr-defined]
                raise Conflict(f"The username {username!r} is taken", location="username")
            fhir_user = None
            if patient:
                _require(tx, "Patient", patient, "patient")
                fhir_user = f"Patient/{patient}"
            if organization:
                _require(tx, "Organization", organization, "organization")
            if role in PRACTITIONER_ROLES:
                if practitioner:
                    _require(tx, "Practitioner", practitioner, "practitioner")
                else:
                    practitioner = tx.create("Practitioner", practitioner_for(username, name)).id
                fhir_user = f"Practitioner/{practitioner}"
            row = UserRow(
                id=new_id(),
                username=username,
                role=role,
                display_name=name,
                password_hash=hashed,
                fhir_user=fhir_user,
                patient_id=patient,
                organization_id=organization,
                totp_secret=None,
                totp_pending_secret=None,
                totp_last_step=None,
                disabled=False,
                failed_attempts=0,
                locked_until=None,
                created=now,
                updated=now,
            )
            if not self.records.insert_user(row, tx.cursor):  # type: ignore[attr-defined]
                raise Conflict(f"The username {username!r} is taken", location="username")
        return _user(row)

    # --- changing ----------------------------------------------------------------------------
    def set_password(self, username: str, password: str) -> None:
        """Set a new password (policy checked), clear any lockout and end every session."""
        row = self._row(username)
        check_policy(password, row.username)
        hashed = self.passwords.hash(password)
        with self.store.writing() as cur:
            self.records.update_user(
                row.id,
                self._now_ms(),
                cur,
                password_hash=hashed,
                failed_attempts=0,
                locked_until=None,
            )
            self.records.revoke_user_sessions(row.id, cur)

    def disable(self, username: str) -> None:
        """Refuse every login of the user and end their sessions."""
        row = self._row(username)
        with self.store.writing() as cur:
            self.records.update_user(row.id, self._now_ms(), cur, disabled=True)
            self.records.revoke_user_sessions(row.id, cur)

    def enable(self, username: str) -> None:
        """Allow the user to log in again."""
        self.records.update_user(self._row(username).id, self._now_ms(), disabled=False)

    def unlock(self, username: str) -> None:
        """End a lockout now and forget the failed attempts."""
        row = self._row(username)
        self.records.update_user(row.id, self._now_ms(), failed_attempts=0, locked_until=None)

    def enroll_totp(self, username: str, *, activate: bool = False) -> TotpEnrollment:
        """A new TOTP secret and 10 new recovery codes (the old codes stop working).

        With `activate` (an administrator enrolling the user) the secret is required from the
        next login on; otherwise it waits for `confirm_totp` with a code from the user's app,
        and any earlier secret stays in force until then.
        """
        row = self._row(username)
        secret = totp.new_secret()
        codes = totp.new_recovery_codes()
        changes: dict[str, Any] = (
            {"totp_secret": secret, "totp_pending_secret": None, "totp_last_step": None}
            if activate
            else {"totp_pending_secret": secret}
        )
        with self.store.writing() as cur:
            self.records.update_user(row.id, self._now_ms(), cur, **changes)
            self.records.replace_recovery_codes(
                row.id, [totp.recovery_code_hash(c) for c in codes], cur
            )
        return TotpEnrollment(secret, totp.provisioning_uri(secret, row.username), codes)

    def confirm_totp(self, username: str, code: str) -> None:
        """Activate the pending TOTP secret, proven by a current `code` from the user's app."""
        row = self._row(username)
        if row.totp_pending_secret is None:
            raise BadRequest("There is no TOTP enrolment to confirm; enrol first", location="code")
        step = totp.matching_step(
            row.totp_pending_secret, code, last_used_step=None, now=self.clock()
        )
        if step is None:
            raise BadRequest(
                "The code does not match the new secret; check the app's clock and enter "
                "the current code",
                location="code",
            )
        self.records.update_user(
            row.id,
            self._now_ms(),
            totp_secret=row.totp_pending_secret,
            totp_pending_secret=None,
            totp_last_step=step,
        )

    def reset_totp(self, username: str) -> None:
        """Remove the second factor and recovery codes (a lost phone); enrol again after."""
        row = self._row(username)
        with self.store.writing() as cur:
            self.records.update_user(
                row.id,
                self._now_ms(),
                cur,
                totp_secret=None,
                totp_pending_secret=None,
                totp_last_step=None,
            )
            self.records.replace_recovery_codes(row.id, [], cur)

    def unused_recovery_codes(self, username: str) -> int:
        """How many of the user's recovery codes are left."""
        return self.records.unused_recovery_codes(self._row(username).id)

    # --- authenticating ----------------------------------------------------------------------
    def authenticate(self, username: str, password: str, second_factor: str | None = None) -> User:
        """The user whose credentials these are.

        Raises Unauthorized (wrong or unknown, always the same message), SecondFactorRequired
        (password right, TOTP enrolled, no `second_factor` given), TooManyRequests with
        Retry-After (locked out), or Forbidden (right password, disabled account).
        """
        now = self.clock()
        # A malformed name cannot exist, but is answered (and locked out) like any unknown one.
        name = username.strip().lower()
        row = self.records.user_by_username(name) if USERNAME_PATTERN.fullmatch(name) else None
        if row is None:
            name = name[:200]  # the in-process tracker keeps no arbitrarily long keys
            self._phantoms.check(name, now)
            self.passwords.verify(None, password)  # same cost as a real check
            until = self._phantoms.fail(name, now)
            raise lockout.too_many(until, now) if until else Unauthorized(BAD_CREDENTIALS)
        lockout.check_not_locked(row.locked_until, now)
        if not self.passwords.verify(row.password_hash, password):
            self._failed(row, now, BAD_CREDENTIALS)
        if row.disabled:
            raise Forbidden("This account is disabled; ask an administrator")
        if row.password_hash and self.passwords.needs_rehash(row.password_hash):
            self.records.update_user(
                row.id, self._now_ms(), password_hash=self.passwords.hash(password)
            )
        if row.totp_secret is not None:
            if second_factor is None:
                raise SecondFactorRequired(_user(row))
            self._check_second_factor(row, second_factor, now)
        return self._succeeded(row)

    def verify_second_factor(self, user_id: str, code: str) -> User:
        """Finish a login whose password step passed: check a TOTP or recovery `code`.

        Failures count towards the same lockout as wrong passwords.
        """
        now = self.clock()
        row = self.records.user_by_id(user_id)
        if row is None or row.totp_secret is None:
            raise Unauthorized("The sign-in has expired; start again")
        lockout.check_not_locked(row.locked_until, now)
        if row.disabled:
            raise Forbidden("This account is disabled; ask an administrator")
        self._check_second_factor(row, code, now)
        return self._succeeded(row)

    def _check_second_factor(self, row: UserRow, code: str, now: float) -> None:
        assert row.totp_secret is not None
        if totp.looks_like_totp(code):
            step = totp.matching_step(
                row.totp_secret, code, last_used_step=row.totp_last_step, now=now
            )
            accepted = step is not None and self.records.use_totp_step(row.id, step)
        else:
            accepted = bool(code.strip()) and self.records.use_recovery_code(
                row.id, totp.recovery_code_hash(code), int(now * 1000)
            )
        if not accepted:
            self._failed(row, now, BAD_SECOND_FACTOR)

    def _failed(self, row: UserRow, now: float, message: str) -> None:
        _, until = self.records.record_failure(
            row.id, int(now * 1000), lambda attempts: lockout.lock_until_ms(attempts, now)
        )
        raise lockout.too_many(until, now) if until else Unauthorized(message)

    def _succeeded(self, row: UserRow) -> User:
        if row.failed_attempts or row.locked_until:
            self.records.update_user(row.id, self._now_ms(), failed_attempts=0, locked_until=None)
        return _user(row)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
