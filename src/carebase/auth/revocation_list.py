"""The revoked access tokens, answered from memory: `TokenService(is_revoked=...)` asks on
every request, so the check is a set lookup. The set is reloaded from the database every few
seconds (revocations made by other worker processes show up within that time) and updated at
once for revocations made by this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from carebase.store.oauth_records import OAuthRecords

#: How stale the in-memory copy may get before a check reloads it, seconds.
RELOAD_SECONDS = 5.0
#: How often expired rows (revoked jtis, assertion jtis, codes, launches) are deleted.
PURGE_SECONDS = 300.0


class RevokedTokens:
    """The set of revoked access-token ids (`jti`) that have not expired yet."""

    def __init__(self, records: OAuthRecords, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.records = records
        self.reload_seconds = reload_seconds
        self._jtis: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._purged_at = float("-inf")
        self._lock = threading.Lock()

    def is_revoked(self, jti: str) -> bool:
        """Whether the token with this id was revoked (the `TokenService` hook)."""
        if time.monotonic() - self._loaded_at > self.reload_seconds:
            self._reload()
        return jti in self._jtis

    def revoke(self, jtis: Iterable[tuple[str, int]]) -> None:
        """Revoke access tokens given as (jti, expires); effective here at once."""
        rows = [(jti, int(exp)) for jti, exp in jtis if jti]
        if not rows:
            return
        self.records.revoke_jtis(rows)
        with self._lock:
            self._jtis = self._jtis | {jti for jti, _ in rows}

    def _reload(self) -> None:
        # One thread reloads; the others keep answering from the current copy meanwhile
        # (except before the first load: nobody answers from an empty set).
        first = self._loaded_at == float("-inf")
        if not self._lock.acquire(blocking=first):
            return
        try:
            now = int(time.time())
            if time.monotonic() - self._purged_at > PURGE_SECONDS:
                self.records.purge_expired(now)
                self._purged_at = time.monotonic()
            self._jtis = frozenset(self.records.revoked_jtis(now))
            self._loaded_at = time.monotonic()
        finally:
            self._lock.release()
