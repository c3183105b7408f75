"""Browser sessions on SQLite and PostgreSQL: hashed tokens, idle and absolute expiry,
revocation, half-finished logins."""

from __future__ import annotations

import pytest
from auth_helpers import PASSWORD, Clock

from carebase.auth.sessions import (
    ABSOLUTE_SECONDS,
    IDLE_SECONDS,
    PENDING_SECONDS,
    BrowserSessions,
    token_hash,
)
from carebase.auth.users import UserDirectory
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore


@pytest.fixture
def sessions(store: Store, clock: Clock) -> BrowserSessions:
    return BrowserSessions(store, clock=clock)


@pytest.fixture
def user_id(directory: UserDirectory) -> str:
    return directory.add("alice", "clinician", PASSWORD).id


def _stored_rows(store: Store) -> list[tuple[object, ...]]:
    assert isinstance(store, SqlStore)
    with store.reading() as cur:
        return [tuple(r) for r in cur.execute("SELECT * FROM user_sessions").fetchall()]


def test_create_and_look_up(store: Store, sessions: BrowserSessions, user_id: str) -> None:
    session = sessions.create(user_id, source_ip="10.0.0.1", user_agent="test")
    assert len(session.token) >= 40 and len(session.csrf_secret) >= 40
    found = sessions.lookup(session.token)
    assert found is not None
    assert (found.user_id, found.csrf_secret, found.second_factor_pending) == (
        user_id,
        session.csrf_secret,
        False,
    )
    # Only the token's SHA-256 is stored.
    rows = _stored_rows(store)
    assert len(rows) == 1
    assert session.token not in repr(rows) and token_hash(session.token) in rows[0]


def test_unknown_and_garbage_tokens_find_nothing(sessions: BrowserSessions, user_id: str) -> None:
    sessions.create(user_id)
    for token in ("", "x", "' OR 1=1 --", "a" * 5000):
        assert sessions.lookup(token) is None


def test_idle_timeout(sessions: BrowserSessions, clock: Clock, user_id: str) -> None:
    session = sessions.create(user_id)
    clock.advance(IDLE_SECONDS - 5)
    assert sessions.lookup(session.token) is not None
    other = sessions.create(user_id)
    clock.advance(IDLE_SECONDS + 1)
    assert sessions.lookup(other.token) is None


def test_use_slides_the_idle_expiry(sessions: BrowserSessions, clock: Clock, user_id: str) -> None:
    session = sessions.create(user_id)
    for _ in range(4):  # 80 minutes in all, never 30 idle
        clock.advance(20 * 60)
        assert sessions.lookup(session.token) is not None


def test_absolute_timeout_ends_even_a_busy_session(
    sessions: BrowserSessions, clock: Clock, user_id: str
) -> None:
    session = sessions.create(user_id)
    elapsed = 0
    while elapsed + 20 * 60 < ABSOLUTE_SECONDS:
        clock.advance(20 * 60)
        elapsed += 20 * 60
        assert sessions.lookup(session.token) is not None
    clock.advance(ABSOLUTE_SECONDS - elapsed + 1)
    assert sessions.lookup(session.token) is None


def test_revoke_one_and_all_of_a_user(
    sessions: BrowserSessions, directory: UserDirectory, user_id: str
) -> None:
    first, second = sessions.create(user_id), sessions.create(user_id)
    bob = directory.add("bob", "nurse", PASSWORD)
    bobs = sessions.create(bob.id)
    sessions.revoke(first.token)
    assert sessions.lookup(first.token) is None
    assert sessions.lookup(second.token) is not None
    assert sessions.revoke_user(user_id) == 1
    assert sessions.lookup(second.token) is None
    assert sessions.lookup(bobs.token) is not None


def test_half_finished_login_is_flagged_and_short(
    sessions: BrowserSessions, clock: Clock, user_id: str
) -> None:
    pending = sessions.create(user_id, second_factor_pending=True)
    found = sessions.lookup(pending.token)
    assert found is not None and found.second_factor_pending
    clock.advance(PENDING_SECONDS + 1)
    assert sessions.lookup(pending.token) is None


def test_purge_deletes_ended_sessions(
    store: Store, sessions: BrowserSessions, clock: Clock, user_id: str
) -> None:
    ended, live = sessions.create(user_id), sessions.create(user_id)
    sessions.revoke(ended.token)
    assert sessions.purge() == 1
    assert len(_stored_rows(store)) == 1
    assert sessions.lookup(live.token) is not None
    clock.advance(IDLE_SECONDS + 1)
    assert sessions.purge() == 1
    assert _stored_rows(store) == []


def test_logins_delete_ended_sessions_now_and_then(
    store: Store, sessions: BrowserSessions, clock: Clock, user_id: str
) -> None:
    first = sessions.create(user_id)
    sessions.revoke(first.token)
    sessions.create(user_id)  # within the hour: nothing is purged yet
    assert len(_stored_rows(store)) == 2
    clock.advance(3601)
    sessions.create(user_id)  # the expired and the revoked one go
    assert len(_stored_rows(store)) == 1
