"""Browser sessions: an opaque random token in a cookie, and a server-side record of it.

Only the SHA-256 of a token is stored, so a copy of the database does not let anyone take
over a session. A session ends after 30 minutes without use (sliding), 12 hours after it
began whatever the use, when revoked (logout) or when the user's password changes. Each
session has its own CSRF secret for the forms it posts.

A session may also be a half-finished login: the password was right and the TOTP code is
still to come (`second_factor_pending`); such a session identifies nobody and lasts minutes.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from carebase.store.accounts import AccountRecords, SessionRow
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore

IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 60 * 60
#: How long the second-factor step of a login may take.
PENDING_SECONDS = 5 * 60
#: A session's last use is written at most this often (not on every request).
_TOUCH_EVERY_SECONDS = 60
#: Ended sessions are deleted (on a login) at most this often per process.
_PURGE_EVERY_SECONDS = 3600


def token_hash(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: whose it is, its CSRF secret, whether the login is still half done."""

    token: str
    user_id: str
    csrf_secret: str
    second_factor_pending: bool
    expires_at: float  # the earlier of idle and absolute expiry, Unix seconds


class BrowserSessions:
    """Creates, finds and ends the browser sessions stored in one store."""

    def __init__(
        self,
        store: Store,
        *,
        idle_seconds: int = IDLE_SECONDS,
        absolute_seconds: int = ABSOLUTE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(store, SqlStore):
            raise TypeError("BrowserSessions needs a SQL store")
        self.records = AccountRecords(store)
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self.clock = clock
        self._last_purge = 0.0

    def create(
        self,
        user_id: str,
        *,
        second_factor_pending: bool = False,
        source_ip: str | None = None,
        user_agent: str | None = None,
    ) -> Session:
        """A new session for `user_id`; its token goes into the cookie and nowhere else."""
        now = self.clock()
        if now - self._last_purge >= _PURGE_EVERY_SECONDS:
            # Housekeeping rides on logins so the table holds live sessions, not history.
            self._last_purge = now
            self.purge()
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        lifetime = PENDING_SECONDS if second_factor_pending else self.absolute_seconds
        idle = min(self.idle_seconds, lifetime)
        ms = int(now * 1000)
        self.records.insert_session(
            SessionRow(
                token_hash=token_hash(token),
                user_id=user_id,
                csrf_secret=csrf,
                second_factor_pending=second_factor_pending,
                created=ms,
                last_seen=ms,
                idle_expires=ms + idle * 1000,
                absolute_expires=ms + lifetime * 1000,
                revoked=False,
                source_ip=source_ip,
                user_agent=(user_agent or "")[:300] or None,
            )
        )
        return Session(token, user_id, csrf, second_factor_pending, now + idle)

    def lookup(self, token: str) -> Session | None:
        """The live session of `token` (sliding its idle expiry), or None when the token is
        unknown, revoked or expired."""
        if not token or len(token) > 200:
            return None
        key = token_hash(token)
        row = self.records.session(key)
        now = self.clock()
        ms = int(now * 1000)
        if row is None or row.revoked or row.idle_expires <= ms or row.absolute_expires <= ms:
            return None
        idle_expires = row.idle_expires
        if not row.second_factor_pending and ms - row.last_seen >= _TOUCH_EVERY_SECONDS * 1000:
            idle_expires = min(ms + self.idle_seconds * 1000, row.absolute_expires)
            self.records.touch_session(key, ms, idle_expires)
        return Session(
            token,
            row.user_id,
            row.csrf_secret,
            row.second_factor_pending,
            min(idle_expires, row.absolute_expires) / 1000,
        )

    def revoke(self, token: str) -> None:
        """End the session of `token` (logout); unknown tokens are ignored."""
        self.records.revoke_session(token_hash(token))

    def revoke_user(self, user_id: str) -> int:
        """End every session of a user; returns how many were open."""
        return self.records.revoke_user_sessions(user_id)

    def purge(self) -> int:
        """Delete ended sessions (housekeeping); returns how many."""
        return self.records.purge_sessions(int(self.clock() * 1000))
