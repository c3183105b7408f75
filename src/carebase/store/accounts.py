"""The SQL of login accounts: users, their recovery codes and their browser sessions.

`auth.users` and `auth.sessions` decide the rules (passwords, lockout, expiry); this module
only stores and fetches rows, on SQLite and PostgreSQL alike. Times are Unix milliseconds.
Methods that write take an optional cursor so a caller can join them to a larger unit of
work (creating a user and their Practitioner resource commit together).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from carebase.store.sql_store import Cursor, SqlStore


@dataclass(frozen=True, slots=True)
class UserRow:
    """One row of `users`."""

    id: str
    username: str
    role: str
    display_name: str | None
    password_hash: str | None
    fhir_user: str | None
    patient_id: str | None
    organization_id: str | None
    totp_secret: str | None
    totp_pending_secret: str | None
    totp_last_step: int | None
    disabled: bool
    failed_attempts: int
    locked_until: int | None
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One row of `user_sessions` (the token itself is never stored, only its SHA-256)."""

    token_hash: str
    user_id: str
    csrf_secret: str
    second_factor_pending: bool
    created: int
    last_seen: int
    idle_expires: int
    absolute_expires: int
    revoked: bool
    source_ip: str | None
    user_agent: str | None


_USER_COLUMNS = tuple(f.name for f in fields(UserRow))
_SESSION_COLUMNS = tuple(f.name for f in fields(SessionRow))
#: Columns `update_user` may change (never id, username or created).
_UPDATABLE = frozenset(_USER_COLUMNS) - {"id", "username", "created", "updated"}


def _user(row: Any) -> UserRow:
    values = dict(zip(_USER_COLUMNS, row, strict=True))
    values["disabled"] = bool(values["disabled"])
    return UserRow(**values)


def _session(row: Any) -> SessionRow:
    values = dict(zip(_SESSION_COLUMNS, row, strict=True))
    values["second_factor_pending"] = bool(values["second_factor_pending"])
    values["revoked"] = bool(values["revoked"])
    return SessionRow(**values)


class AccountRecords:
    """Reads and writes account rows in one store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._q = store.q

    @contextmanager
    def _writing(self, cur: Cursor | None) -> Iterator[Cursor]:
        if cur is not None:
            yield cur
        else:
            with self.store.writing() as own:
                yield own

    # --- users ---------------------------------------------------------------------------------
    def insert_user(self, row: UserRow, cur: Cursor | None = None) -> bool:
        """Insert `row`; False (nothing written) when its username is taken."""
        values = [getattr(row, c) for c in _USER_COLUMNS]
        values[_USER_COLUMNS.index("disabled")] = int(row.disabled)
        marks = ", ".join("?" for _ in _USER_COLUMNS)
        sql = (
            f"INSERT INTO users ({', '.join(_USER_COLUMNS)}) VALUES ({marks})"
            " ON CONFLICT (username) DO NOTHING"
        )
        with self._writing(cur) as c:
            return int(c.execute(self._q(sql), values).rowcount or 0) == 1

    def user_by_username(self, username: str, cur: Cursor | None = None) -> UserRow | None:
        """The user with this (normalised) username, or None."""
        return self._one_user("username", username, cur)

    def user_by_id(self, user_id: str, cur: Cursor | None = None) -> UserRow | None:
        """The user with this id, or None."""
        return self._one_user("id", user_id, cur)

    def _one_user(self, column: str, value: str, cur: Cursor | None) -> UserRow | None:
        sql = self._q(f"SELECT {', '.join(_USER_COLUMNS)} FROM users WHERE {column} = ?")
        if cur is not None:
            row = cur.execute(sql, (value,)).fetchone()
        else:
            with self.store.reading() as c:
                row = c.execute(sql, (value,)).fetchone()
        return _user(row) if row else None

    def list_users(self) -> list[UserRow]:
        """Every user, by username."""
        with self.store.reading() as c:
            rows = c.execute(
                f"SELECT {', '.join(_USER_COLUMNS)} FROM users ORDER BY username"
            ).fetchall()
        return [_user(r) for r in rows]

    def update_user(
        self, user_id: str, now: int, cur: Cursor | None = None, **changes: Any
    ) -> bool:
        """Set the given columns of one user; False when there is no such user."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable user columns: {sorted(unknown)}")
        if "disabled" in changes:
            changes["disabled"] = int(bool(changes["disabled"]))
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = self._q(f"UPDATE users SET {assignments}, updated = ? WHERE id = ?")
        with self._writing(cur) as c:
            done = c.execute(sql, [*changes.values(), now, user_id]).rowcount
        return int(done or 0) == 1

    def record_failure(
        self, user_id: str, now: int, lock_until: Callable[[int], int | None]
    ) -> tuple[int, int | None]:
        """Count one failed login; `lock_until(attempts)` says until when to lock (or None).

        Returns the attempt count and the lock's end. The increment happens in the database,
        so concurrent failures are all counted.
        """
        with self.store.writing() as c:
            row = c.execute(
                self._q(
                    "UPDATE users SET failed_attempts = failed_attempts + 1, updated = ?"
                    " WHERE id = ? RETURNING failed_attempts"
                ),
                (now, user_id),
            ).fetchone()
            attempts = int(row[0]) if row else 0
            until = lock_until(attempts)
            if until is not None:
                c.execute(
                    self._q("UPDATE users SET locked_until = ? WHERE id = ?"), (until, user_id)
                )
        return attempts, until

    def use_totp_step(self, user_id: str, step: int) -> bool:
        """Record `step` as the user's last used TOTP step, only if it is later than the one
        recorded; False (a replay, possibly a concurrent one) otherwise."""
        with self.store.writing() as c:
            done = c.execute(
                self._q(
                    "UPDATE users SET totp_last_step = ? WHERE id = ?"
                    " AND (totp_last_step IS NULL OR totp_last_step < ?)"
                ),
                (step, user_id, step),
            ).rowcount
        return int(done or 0) == 1

    # --- recovery codes ----------------------------------------------------------------------
    def replace_recovery_codes(
        self, user_id: str, hashes: list[str], cur: Cursor | None = None
    ) -> None:
        """Drop the user's recovery codes and store `hashes` as the new, unused set."""
        with self._writing(cur) as c:
            c.execute(self._q("DELETE FROM user_recovery_codes WHERE user_id = ?"), (user_id,))
            if hashes:
                c.executemany(
                    self._q("INSERT INTO user_recovery_codes (user_id, code_hash) VALUES (?, ?)"),
                    [(user_id, h) for h in hashes],
                )

    def use_recovery_code(self, user_id: str, code_hash: str, now: int) -> bool:
        """Mark one unused code as used; False when there is no such unused code."""
        with self.store.writing() as c:
            done = c.execute(
                self._q(
                    "UPDATE user_recovery_codes SET used = ?"
                    " WHERE user_id = ? AND code_hash = ? AND used IS NULL"
                ),
                (now, user_id, code_hash),
            ).rowcount
        return int(done or 0) == 1

    def unused_recovery_codes(self, user_id: str) -> int:
        """How many of the user's recovery codes are still unused."""
        with self.store.reading() as c:
            row = c.execute(
                self._q(
                    "SELECT COUNT(*) FROM user_recovery_codes WHERE user_id = ? AND used IS NULL"
                ),
                (user_id,),
            ).fetchone()
        return int(row[0])

    # --- sessions ----------------------------------------------------------------------------
    def insert_session(self, row: SessionRow) -> None:
        """Store a new session."""
        values = [getattr(row, c) for c in _SESSION_COLUMNS]
        values[_SESSION_COLUMNS.index("second_factor_pending")] = int(row.second_factor_pending)
        values[_SESSION_COLUMNS.index("revoked")] = int(row.revoked)
        marks = ", ".join("?" for _ in _SESSION_COLUMNS)
        with self.store.writing() as c:
            c.execute(
                self._q(
                    f"INSERT INTO user_sessions ({', '.join(_SESSION_COLUMNS)}) VALUES ({marks})"
                ),
                values,
            )

    def session(self, token_hash: str) -> SessionRow | None:
        """The session with this token hash, or None."""
        with self.store.reading() as c:
            row = c.execute(
                self._q(
                    f"SELECT {', '.join(_SESSION_COLUMNS)} FROM user_sessions WHERE token_hash = ?"
                ),
                (token_hash,),
            ).fetchone()
        return _session(row) if row else None

    def touch_session(self, token_hash: str, last_seen: int, idle_expires: int) -> None:
        """Slide a session's idle expiry (it was just used)."""
        with self.store.writing() as c:
            c.execute(
                self._q(
                    "UPDATE user_sessions SET last_seen = ?, idle_expires = ? WHERE token_hash = ?"
                ),
                (last_seen, idle_expires, token_hash),
            )

    def revoke_session(self, token_hash: str) -> None:
        """End one session."""
        with self.store.writing() as c:
            c.execute(
                self._q("UPDATE user_sessions SET revoked = 1 WHERE token_hash = ?"), (token_hash,)
            )

    def revoke_user_sessions(self, user_id: str, cur: Cursor | None = None) -> int:
        """End every session of a user; returns how many were still open."""
        with self._writing(cur) as c:
            done = c.execute(
                self._q("UPDATE user_sessions SET revoked = 1 WHERE user_id = ? AND revoked = 0"),
                (user_id,),
            ).rowcount
        return int(done or 0)

    def purge_sessions(self, before: int) -> int:
        """Delete sessions that ended (expired or revoked) before `before`; returns how many."""
        with self.store.writing() as c:
            done = c.execute(
                self._q(
                    "DELETE FROM user_sessions WHERE absolute_expires < ? OR idle_expires < ?"
                    " OR revoked = 1"
                ),
                (before, before),
            ).rowcount
        return int(done or 0)
