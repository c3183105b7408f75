"""Lockout with exponential back-off after repeated failed logins.

After `THRESHOLD` failures in a row an account is locked for 30 seconds; each further failure
doubles the lock, up to an hour. A successful login (or `carebase users unlock`) clears it.
Usernames that do not exist get the same treatment from an in-process tracker, so a locked
answer does not tell an attacker which usernames are real.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from carebase.errors import TooManyRequests

THRESHOLD = 5
BASE_SECONDS = 30
MAX_SECONDS = 3600
#: Unknown usernames remembered at most (oldest forgotten first).
_PHANTOM_CAPACITY = 10_000


def lock_seconds(attempts: int) -> int | None:
    """How long to lock after the `attempts`-th failure in a row (None: no lock yet)."""
    if attempts < THRESHOLD:
        return None
    # min() before the power would overflow for absurd counts; 2**7 * 30 s already exceeds 1 h.
    return min(BASE_SECONDS * 2 ** min(attempts - THRESHOLD, 16), MAX_SECONDS)


def lock_until_ms(attempts: int, now: float) -> int | None:
    """The end of the lock after the `attempts`-th failure at `now` (Unix ms), or None."""
    seconds = lock_seconds(attempts)
    return None if seconds is None else int((now + seconds) * 1000)


def too_many(locked_until_ms: int, now: float) -> TooManyRequests:
    """The 429 for a login attempt while locked, with `Retry-After` in whole seconds."""
    wait = max(1, math.ceil(locked_until_ms / 1000 - now))
    return TooManyRequests(
        f"Too many failed sign-in attempts; try again in {wait} seconds",
        headers={"Retry-After": str(wait)},
    )


def check_not_locked(locked_until_ms: int | None, now: float) -> None:
    """Raise the 429 when a lock ending at `locked_until_ms` is still in force at `now`."""
    if locked_until_ms is not None and locked_until_ms > now * 1000:
        raise too_many(locked_until_ms, now)


class PhantomLockouts:
    """Failure counts for usernames that do not exist (in-process, bounded)."""

    def __init__(self, capacity: int = _PHANTOM_CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, int | None]] = OrderedDict()

    def check(self, username: str, now: float) -> None:
        """Raise the 429 while `username` is locked."""
        with self._lock:
            entry = self._entries.get(username)
        if entry is not None:
            check_not_locked(entry[1], now)

    def fail(self, username: str, now: float) -> int | None:
        """Count one failure; returns the end of the lock it starts, if any."""
        with self._lock:
            attempts = self._entries.pop(username, (0, None))[0] + 1
            until = lock_until_ms(attempts, now)
            self._entries[username] = (attempts, until)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return until
