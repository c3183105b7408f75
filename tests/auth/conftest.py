"""Fixtures of the auth tests: a settable clock and a UserDirectory over the test store."""

from __future__ import annotations

import pytest
from auth_helpers import FAST, Clock

from carebase.auth.users import UserDirectory
from carebase.store.base import Store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(store: Store, clock: Clock) -> UserDirectory:
    """Users in the test store (SQLite and PostgreSQL), with the hand-moved clock."""
    return UserDirectory(store, passwords=FAST, clock=clock)
