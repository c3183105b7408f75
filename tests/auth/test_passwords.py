"""argon2id hashing, rehash on parameter change, and the password policy."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters
from argon2.low_level import Type

from carebase.auth.passwords import (
    MEMORY_COST_KIB,
    PARALLELISM,
    TIME_COST,
    Passwords,
    check_policy,
    policy_problem,
)
from carebase.errors import BadRequest


def test_default_hash_is_argon2id_with_the_chosen_costs() -> None:
    hashed = Passwords().hash("correct horse battery")
    assert hashed.startswith("$argon2id$v=19$")
    params = extract_parameters(hashed)
    assert params.type is Type.ID
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        TIME_COST,
        MEMORY_COST_KIB,
        PARALLELISM,
    )
    assert MEMORY_COST_KIB >= 19 * 1024 and TIME_COST >= 2  # at least OWASP's minimum


def test_verify_accepts_the_password_and_nothing_else() -> None:
    passwords = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
    hashed = passwords.hash("correct horse battery")
    assert "correct horse battery" not in hashed
    assert passwords.verify(hashed, "correct horse battery")
    assert not passwords.verify(hashed, "correct horse batterY")
    assert not passwords.verify(hashed, "")


def test_same_password_gets_a_new_salt_each_time() -> None:
    passwords = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
    assert passwords.hash("correct horse battery") != passwords.hash("correct horse battery")


def test_missing_or_garbage_hash_never_verifies() -> None:
    passwords = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
    assert not passwords.verify(None, "anything at all here")
    assert not passwords.verify("not-a-hash", "anything at all here")
    assert not passwords.verify("$argon2id$v=19$m=8,t=1,p=1$bad", "anything at all here")


def test_needs_rehash_when_parameters_change() -> None:
    cheap = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
    stronger = Passwords(time_cost=2, memory_cost_kib=16, parallelism=1)
    hashed = cheap.hash("correct horse battery")
    assert not cheap.needs_rehash(hashed)
    assert stronger.needs_rehash(hashed)
    assert stronger.verify(hashed, "correct horse battery")  # old hashes still verify
    assert stronger.needs_rehash("garbage")


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("short", ["5 characters", "at least 12"]),
        ("x" * 257, ["longer than 256"]),
        ("Alice.Example", ["must not be the username"]),
        ("aaaaaaaaaaaaaa", ["repeated"]),
    ],
)
def test_policy_refuses_with_a_clear_message(password: str, words: list[str]) -> None:
    with pytest.raises(BadRequest) as caught:
        check_policy(password, "alice.example")
    for word in words:
        assert word in caught.value.message
    assert caught.value.issues[0].expression == ["password"]


def test_policy_accepts_a_long_passphrase() -> None:
    assert policy_problem("correct horse battery", "alice") is None
    assert policy_problem("x" * 12 + "y", "alice") is None
