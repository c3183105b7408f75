"""UserDirectory on SQLite and PostgreSQL: creating users with their FHIR identities,
authentication, lockout with back-off, TOTP with replay refusal, recovery codes."""

from __future__ import annotations

import orjson
import pytest
from auth_helpers import FAST, PASSWORD, Clock

from carebase.auth import lockout, totp
from carebase.auth.passwords import Passwords
from carebase.auth.sessions import BrowserSessions
from carebase.auth.users import BAD_CREDENTIALS, SecondFactorRequired, UserDirectory
from carebase.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from carebase.store.accounts import AccountRecords
from carebase.store.base import Store


def _create(store: Store, type_: str, id_: str) -> None:
    with store.transaction() as tx:
        tx.update(type_, id_, {"resourceType": type_, "id": id_})


def _count(store: Store, type_: str) -> int:
    return sum(1 for _ in store.iter_current(type_))


# --- creating ------------------------------------------------------------------------------
def test_clinician_gets_a_practitioner_named_after_them(
    store: Store, directory: UserDirectory
) -> None:
    _create(store, "Organization", "org1")
    user = directory.add("Alice", "clinician", PASSWORD, name="Alice B Smith", organization="org1")
    assert (user.username, user.role, user.organization) == ("alice", "clinician", "org1")
    assert user.fhir_user is not None and user.fhir_user.startswith("Practitioner/")
    stored = store.read("Practitioner", user.fhir_user.split("/")[1])
    assert stored is not None and stored.body is not None
    body = orjson.loads(stored.body)
    assert body["name"] == [{"text": "Alice B Smith", "family": "Smith", "given": ["Alice", "B"]}]
    assert body["identifier"] == [{"system": "urn:carebase:username", "value": "alice"}]
    assert directory.get("ALICE") == user
    assert directory.by_id(user.id) == user


def test_staff_may_use_an_existing_practitioner(store: Store, directory: UserDirectory) -> None:
    _create(store, "Practitioner", "pr1")
    user = directory.add("nina", "nurse", PASSWORD, practitioner="pr1")
    assert user.fhir_user == "Practitioner/pr1"
    assert _count(store, "Practitioner") == 1


def test_patient_user_is_linked_to_their_patient(store: Store, directory: UserDirectory) -> None:
    _create(store, "Patient", "pat1")
    user = directory.add("pat", "patient", PASSWORD, patient="pat1")
    assert (user.fhir_user, user.patient) == ("Patient/pat1", "pat1")
    assert _count(store, "Practitioner") == 0


def test_researcher_and_service_have_no_fhir_identity(directory: UserDirectory) -> None:
    assert directory.add("res", "researcher", PASSWORD).fhir_user is None
    assert directory.add("svc", "service", PASSWORD).fhir_user is None


@pytest.mark.parametrize(
    ("kwargs", "location"),
    [
        ({"username": "bad name", "role": "nurse"}, "username"),
        ({"username": "x", "role": "surgeon"}, "role"),
        ({"username": "p", "role": "patient"}, "patient"),
        ({"username": "p", "role": "patient", "patient": "nope"}, "patient"),
        ({"username": "n", "role": "nurse", "patient": "pat1"}, "patient"),
        ({"username": "n", "role": "nurse", "practitioner": "nope"}, "practitioner"),
        ({"username": "r", "role": "researcher", "practitioner": "pr1"}, "practitioner"),
        ({"username": "c", "role": "clinician", "organization": "nope"}, "organization"),
        ({"username": "f", "role": "front-desk", "organization": "org1"}, "organization"),
    ],
)
def test_refused_user_leaves_nothing_behind(
    store: Store, directory: UserDirectory, kwargs: dict[str, str], location: str
) -> None:
    _create(store, "Patient", "pat1")
    _create(store, "Practitioner", "pr1")
    _create(store, "Organization", "org1")
    with pytest.raises(BadRequest) as caught:
        directory.add(password=PASSWORD, **kwargs)  # type: ignore[arg-type]
    assert caught.value.issues[0].expression == [location]
    assert directory.list() == []
    assert _count(store, "Practitioner") == 1


def test_duplicate_username_is_a_conflict_and_creates_no_practitioner(
    store: Store, directory: UserDirectory
) -> None:
    directory.add("alice", "clinician", PASSWORD)
    with pytest.raises(Conflict, match="taken"):
        directory.add(" Alice ", "nurse", PASSWORD)
    assert _count(store, "Practitioner") == 1
    assert [u.role for u in directory.list()] == ["clinician"]


def test_weak_password_is_refused_before_anything_is_written(
    store: Store, directory: UserDirectory
) -> None:
    with pytest.raises(BadRequest, match="at least 12"):
        directory.add("alice", "clinician", "short")
    with pytest.raises(BadRequest, match="username"):
        directory.add("alice.smithson", "clinician", "Alice.Smithson")
    assert directory.list() == [] and _count(store, "Practitioner") == 0


def test_only_a_hash_is_stored(store: Store, directory: UserDirectory) -> None:
    user = directory.add("alice", "clinician", PASSWORD)
    row = AccountRecords(store).user_by_id(user.id)  # type: ignore[arg-type]
    assert row is not None and row.password_hash is not None
    assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash


# --- authenticating ------------------------------------------------------------------------
def test_authenticate_right_wrong_and_unknown(directory: UserDirectory) -> None:
    user = directory.add("alice", "clinician", PASSWORD)
    assert directory.authenticate("Alice", PASSWORD) == user
    with pytest.raises(Unauthorized) as wrong:
        directory.authenticate("alice", PASSWORD + "!")
    with pytest.raises(Unauthorized) as unknown:
        directory.authenticate("nobody", PASSWORD)
    with pytest.raises(Unauthorized) as malformed:
        directory.authenticate("no body <x>", PASSWORD)
    assert wrong.value.message == unknown.value.message == malformed.value.message
    assert wrong.value.message == BAD_CREDENTIALS


def test_lockout_backs_off_exponentially(directory: UserDirectory, clock: Clock) -> None:
    directory.add("alice", "clinician", PASSWORD)
    for _ in range(lockout.THRESHOLD - 1):
        with pytest.raises(Unauthorized):
            directory.authenticate("alice", "wrong password!")
    with pytest.raises(TooManyRequests) as locked:
        directory.authenticate("alice", "wrong password!")
    assert locked.value.headers["Retry-After"] == "30"
    # While locked even the right password is refused, without counting.
    clock.advance(10)
    with pytest.raises(TooManyRequests) as still:
        directory.authenticate("alice", PASSWORD)
    assert still.value.headers["Retry-After"] == "20"
    clock.advance(21)
    with pytest.raises(TooManyRequests) as doubled:
        directory.authenticate("alice", "wrong password!")
    assert doubled.value.headers["Retry-After"] == "60"
    clock.advance(61)
    assert directory.authenticate("alice", PASSWORD).username == "alice"
    # Success cleared the count: the next failure is an ordinary one.
    with pytest.raises(Unauthorized) as fresh:
        directory.authenticate("alice", "wrong password!")
    assert not isinstance(fresh.value, TooManyRequests)


def test_lock_is_capped_at_an_hour() -> None:
    assert lockout.lock_seconds(lockout.THRESHOLD - 1) is None
    assert lockout.lock_seconds(lockout.THRESHOLD) == 30
    assert lockout.lock_seconds(lockout.THRESHOLD + 3) == 240
    assert lockout.lock_seconds(lockout.THRESHOLD + 20) == 3600
    assert lockout.lock_seconds(10**6) == 3600


def test_unknown_usernames_lock_out_the_same_way(directory: UserDirectory) -> None:
    for _ in range(lockout.THRESHOLD - 1):
        with pytest.raises(Unauthorized) as failed:
            directory.authenticate("ghost", PASSWORD)
        assert not isinstance(failed.value, TooManyRequests)
    with pytest.raises(TooManyRequests) as locked:
        directory.authenticate("ghost", PASSWORD)
    assert locked.value.headers["Retry-After"] == "30"


def test_unlock_ends_the_lock(directory: UserDirectory) -> None:
    directory.add("alice", "clinician", PASSWORD)
    for _ in range(lockout.THRESHOLD):
        with pytest.raises((Unauthorized, TooManyRequests)):
            directory.authenticate("alice", "wrong password!")
    user = directory.get("alice")
    assert user is not None and user.locked_until is not None
    directory.unlock("alice")
    assert directory.authenticate("alice", PASSWORD).locked_until is None


def test_disabled_user_cannot_log_in(store: Store, directory: UserDirectory) -> None:
    user = directory.add("alice", "clinician", PASSWORD)
    sessions = BrowserSessions(store)
    session = sessions.create(user.id)
    directory.disable("alice")
    assert sessions.lookup(session.token) is None
    with pytest.raises(Forbidden, match="disabled"):
        directory.authenticate("alice", PASSWORD)
    with pytest.raises(Unauthorized, match="not right"):
        directory.authenticate("alice", "wrong password!")
    directory.enable("alice")
    assert directory.authenticate("alice", PASSWORD).disabled is False


def test_changes_to_an_unknown_user_are_not_found(directory: UserDirectory) -> None:
    for change in (directory.disable, directory.enable, directory.unlock, directory.reset_totp):
        with pytest.raises(NotFound):
            change("nobody")
    with pytest.raises(NotFound):
        directory.set_password("nobody", PASSWORD)


def test_set_password_replaces_it_clears_the_lock_and_ends_sessions(
    store: Store, directory: UserDirectory
) -> None:
    user = directory.add("alice", "clinician", PASSWORD)
    sessions = BrowserSessions(store)
    open_session = sessions.create(user.id)
    for _ in range(lockout.THRESHOLD):
        with pytest.raises((Unauthorized, TooManyRequests)):
            directory.authenticate("alice", "wrong password!")
    with pytest.raises(BadRequest):
        directory.set_password("alice", "alice")
    directory.set_password("alice", "a new long passphrase")
    assert sessions.lookup(open_session.token) is None
    with pytest.raises(Unauthorized):
        directory.authenticate("alice", PASSWORD)
    assert directory.authenticate("alice", "a new long passphrase").id == user.id


def test_hash_is_upgraded_at_login_when_parameters_change(store: Store, clock: Clock) -> None:
    UserDirectory(store, passwords=FAST, clock=clock).add("alice", "clinician", PASSWORD)
    stronger = Passwords(time_cost=2, memory_cost_kib=16, parallelism=1)
    upgraded = UserDirectory(store, passwords=stronger, clock=clock)
    upgraded.authenticate("alice", PASSWORD)
    row = AccountRecords(store).user_by_username("alice")  # type: ignore[arg-type]
    assert row is not None and row.password_hash is not None
    assert not stronger.needs_rehash(row.password_hash)
    assert "m=16,t=2,p=1" in row.password_hash


# --- TOTP ----------------------------------------------------------------------------------
def test_totp_enrolment_waits_for_confirmation(directory: UserDirectory, clock: Clock) -> None:
    directory.add("alice", "clinician", PASSWORD)
    enrolment = directory.enroll_totp("alice")
    assert "issuer=carebase" in enrolment.uri and len(enrolment.recovery_codes) == 10
    assert directory.authenticate("alice", PASSWORD).totp_enabled is False
    with pytest.raises(BadRequest, match="does not match"):
        directory.confirm_totp("alice", "000000" if enrolment.secret else "")
    code = totp.code_at(enrolment.secret, totp.current_step(clock()))
    directory.confirm_totp("alice", code)
    with pytest.raises(SecondFactorRequired) as required:
        directory.authenticate("alice", PASSWORD)
    assert required.value.user.username == "alice" and required.value.status == 401
    # The confirming code was used: it cannot log in again.
    with pytest.raises(Unauthorized):
        directory.authenticate("alice", PASSWORD, code)


def test_totp_login_refuses_replay_and_wrong_codes(directory: UserDirectory, clock: Clock) -> None:
    directory.add("alice", "clinician", PASSWORD)
    secret = directory.enroll_totp("alice", activate=True).secret
    code = totp.code_at(secret, totp.current_step(clock()))
    assert directory.authenticate("alice", PASSWORD, code).totp_enabled
    with pytest.raises(Unauthorized, match="already used"):
        directory.authenticate("alice", PASSWORD, code)
    wrong = "000000" if code != "000000" else "111111"
    with pytest.raises(Unauthorized):
        directory.authenticate("alice", PASSWORD, wrong)
    clock.advance(totp.STEP_SECONDS)
    later = totp.code_at(secret, totp.current_step(clock()))
    assert directory.authenticate("alice", PASSWORD, later).username == "alice"
    # A wrong password never gets as far as the code.
    with pytest.raises(Unauthorized, match="password"):
        directory.authenticate("alice", "wrong password!", later)


def test_second_factor_failures_count_towards_lockout(directory: UserDirectory) -> None:
    user = directory.add("alice", "clinician", PASSWORD)
    directory.enroll_totp("alice", activate=True)
    for _ in range(lockout.THRESHOLD - 1):
        with pytest.raises(Unauthorized):
            directory.verify_second_factor(user.id, "zzzz-zzzz-zzzz-zzzz")
    with pytest.raises(TooManyRequests):
        directory.verify_second_factor(user.id, "zzzz-zzzz-zzzz-zzzz")


def test_recovery_codes_work_once_each(directory: UserDirectory) -> None:
    user = directory.add("alice", "clinician", PASSWORD)
    codes = directory.enroll_totp("alice", activate=True).recovery_codes
    assert directory.unused_recovery_codes("alice") == 10
    assert directory.authenticate("alice", PASSWORD, codes[0].upper()).id == user.id
    with pytest.raises(Unauthorized):
        directory.authenticate("alice", PASSWORD, codes[0])
    assert directory.verify_second_factor(user.id, codes[1]).id == user.id
    assert directory.unused_recovery_codes("alice") == 8
    # Enrolling again replaces the codes: the old ones stop working.
    directory.enroll_totp("alice", activate=True)
    with pytest.raises(Unauthorized):
        directory.verify_second_factor(user.id, codes[2])


def test_reset_totp_removes_the_second_factor(directory: UserDirectory) -> None:
    directory.add("alice", "clinician", PASSWORD)
    codes = directory.enroll_totp("alice", activate=True).recovery_codes
    directory.reset_totp("alice")
    user = directory.authenticate("alice", PASSWORD)
    assert user.totp_enabled is False
    assert directory.unused_recovery_codes("alice") == 0
    with pytest.raises(Unauthorized):
        directory.verify_second_factor(user.id, codes[0])


def test_list_is_sorted_by_username(directory: UserDirectory) -> None:
    for name in ("carol", "alice", "bob"):
        directory.add(name, "nurse", PASSWORD)
    assert [u.username for u in directory.list()] == ["alice", "bob", "carol"]
