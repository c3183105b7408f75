"""`carebase users ...` as real subprocesses on SQLite files and PostgreSQL schemas.

(Named `_command` because tests/auth/test_users.py tests the directory behind it.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_migrate import assert_one_line_error, run_cli

from carebase.auth import totp
from carebase.auth.users import UserDirectory
from carebase.errors import TooManyRequests, Unauthorized
from carebase.store.factory import open_store

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL: a SQLite file or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carebase.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


def _users(database: str, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = run_cli("users", *args, "--database", database, input=stdin)
    return proc.returncode, proc.stdout, proc.stderr


def _directory(database: str) -> UserDirectory:
    return UserDirectory(open_store(database))


def test_add_list_and_log_in(database: str) -> None:
    code, out, err = _users(
        database,
        "add",
        "Alice",
        "--role",
        "clinician",
        "--name",
        "Alice Smith",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    assert re.search(r"Added user alice \(clinician\) as Practitioner/\S+\.", out)
    code, out, err = _users(database, "list")
    assert code == 0, err
    assert re.search(r"alice\s+.*clinician\s+.*Practitioner/", out) and "active" in out
    directory = _directory(database)
    try:
        user = directory.authenticate("alice", PASSWORD)
        assert user.name == "Alice Smith"
    finally:
        directory.store.close()


def test_add_without_a_terminal_asks_for_password_stdin(database: str) -> None:
    proc = run_cli("users", "add", "bob", "--role", "nurse", "--database", database, input="")
    assert proc.returncode == 2
    assert "--password-stdin" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (("add", "bob", "--role", "nurse", "--password-stdin"), "short\n", ["at least 12"]),
        (("add", "bob", "--role", "patient", "--password-stdin"), PASSWORD, ["Patient"]),
        (
            ("add", "bob", "--role", "patient", "--patient", "nope", "--password-stdin"),
            PASSWORD,
            ["Patient/nope does not exist"],
        ),
        (("add", "b b", "--role", "nurse", "--password-stdin"), PASSWORD, ["not valid"]),
        (("set-password", "nobody", "--password-stdin"), PASSWORD, ["no user 'nobody'"]),
        (("disable", "nobody"), None, ["no user"]),
        (("totp", "nobody"), None, ["no user"]),
    ],
)
def test_bad_input_is_one_clear_line(
    database: str, args: tuple[str, ...], stdin: str | None, words: list[str]
) -> None:
    proc = run_cli("users", *args, "--database", database, input=stdin)
    assert_one_line_error(proc, *words)


def test_unknown_role_is_a_usage_error(database: str) -> None:
    code, _, err = _users(database, "add", "bob", "--role", "surgeon", stdin=PASSWORD)
    assert code == 2 and "surgeon" in err and "clinician" in err


def test_set_password_totp_disable_enable_unlock(database: str) -> None:
    assert (
        _users(database, "add", "carol", "--role", "nurse", "--password-stdin", stdin=PASSWORD)[0]
        == 0
    )
    code, _, err = _users(
        database, "set-password", "carol", "--password-stdin", stdin="a brand new passphrase\n"
    )
    assert code == 0, err
    code, out, err = _users(database, "totp", "carol")
    assert code == 0, err
    secret = re.search(r"secret: ([A-Z2-7]{32})", out)
    assert secret and "otpauth://totp/carebase:carol?" in out and "issuer=carebase" in out
    codes = re.findall(r"^\s+([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})$", out, re.M)
    assert len(codes) == 10
    directory = _directory(database)
    try:
        with pytest.raises(Unauthorized):
            directory.authenticate("carol", PASSWORD)
        now_code = totp.code_at(secret.group(1), totp.current_step())
        assert directory.authenticate("carol", "a brand new passphrase", now_code)
        assert directory.authenticate("carol", "a brand new passphrase", codes[0])
        assert _users(database, "disable", "carol")[0] == 0
        assert "disabled" in _users(database, "list")[1]
        assert directory.get("carol").disabled  # type: ignore[union-attr]
        assert _users(database, "enable", "carol")[0] == 0
        for _ in range(5):
            with pytest.raises((Unauthorized, TooManyRequests)):
                directory.authenticate("carol", "wrong password!!")
        assert "locked until" in _users(database, "list")[1]
        assert _users(database, "unlock", "carol")[0] == 0
        assert "active" in _users(database, "list")[1]
        assert _users(database, "reset-totp", "carol")[0] == 0
        assert directory.authenticate("carol", "a brand new passphrase").totp_enabled is False
    finally:
        directory.store.close()
