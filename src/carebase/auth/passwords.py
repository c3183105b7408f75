"""Password hashing (argon2id) and the password policy.

Hashes are argon2id in PHC string form (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), so the
parameters travel with each hash: raising them later makes `needs_rehash` true for old hashes,
and the next successful login stores a fresh hash with the new parameters.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from carebase.errors import BadRequest

#: RFC 9106 section 4, second recommended option: 64 MiB, 3 passes, 4 lanes
#: (about 160 ms per hash on the reference laptop: slow for guessing, fine for a login).
TIME_COST = 3
MEMORY_COST_KIB = 64 * 1024
PARALLELISM = 4

MIN_LENGTH = 12
#: Longer passwords are refused so one login cannot make the server hash megabytes.
MAX_LENGTH = 256


@dataclass(slots=True)
class Passwords:
    """Hashes and checks passwords with one set of argon2id parameters."""

    time_cost: int = TIME_COST
    memory_cost_kib: int = MEMORY_COST_KIB
    parallelism: int = PARALLELISM
    _hasher: PasswordHasher = field(init=False, repr=False)
    _dummy: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._hasher = PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            type=Type.ID,
        )

    def hash(self, password: str) -> str:
        """The argon2id hash (PHC string) of `password`, with a fresh random salt."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` matches `stored_hash`; False for a missing or unreadable hash.

        A missing hash (an unknown user, a user without a password) is checked against a
        dummy hash, so the answer takes as long as for a real user and timing reveals nothing.
        """
        target = stored_hash or self._dummy_hash()
        try:
            self._hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether `stored_hash` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
        return self._dummy


def check_policy(password: str, username: str) -> None:
    """Raise BadRequest (location `password`) when `password` breaks the policy: at least
    12 characters, at most 256, not the username, not one character repeated."""
    problem = policy_problem(password, username)
    if problem:
        raise BadRequest(problem, location="password")


def policy_problem(password: str, username: str) -> str | None:
    """Why `password` is not acceptable for `username`, or None when it is."""
    if len(password) < MIN_LENGTH:
        return (
            f"The password has {len(password)} characters; use at least {MIN_LENGTH} "
            "(a few unrelated words make a long password that is easy to remember)"
        )
    if len(password) > MAX_LENGTH:
        return f"The password is longer than {MAX_LENGTH} characters; use a shorter one"
    folded = password.strip().casefold()
    if folded == username.strip().casefold():
        return "The password must not be the username; choose something else"
    if len(set(password)) == 1:
        return "The password is one character repeated; choose something harder to guess"
    return None
