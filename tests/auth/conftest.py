"""Fixtures of the auth tests: a fast password hasher, a settable clock, a UserDirectory."""

from __future__ import annotations

import time

import pytest

from carebase.auth.passwords import Passwords
from carebase.auth.users import UserDirectory
from carebase.store.base import Store

#: Cheap argon2id parameters for tests that are not about the hashing cost.
FAST = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
PASSWORD = "correct horse battery"


class Clock:
    """A clock the test moves by hand (Unix seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(store: Store, clock: Clock) -> UserDirectory:
    """Users in the test store (SQLite and PostgreSQL), with the hand-moved clock."""
    return UserDirectory(store, passwords=FAST, clock=clock)
