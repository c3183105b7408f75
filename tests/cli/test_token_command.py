"""`carebase token` and `carebase keys` as real subprocesses: tokens that verify, scopes
narrowed by the user's role, clear errors for bad input."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from test_migrate import assert_one_line_error, run_cli

from carebase.auth.keys import KeyRing
from carebase.auth.tokens import TokenService
from carebase.config import Settings
from carebase.store.factory import open_store

PASSWORD = "correct horse battery"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _env(data_dir: Path) -> dict[str, str]:
    return {"CAREBASE_DATA_DIR": str(data_dir), "CAREBASE_BASE_URL": "http://testserver/fhir"}


def _service(data_dir: Path) -> TokenService:
    settings = Settings(data_dir=data_dir, base_url="http://testserver/fhir")
    return TokenService(
        KeyRing.open(settings.keys_dir), issuer=settings.token_issuer, audience=settings.fhir_base
    )


def test_service_token_verifies_and_keys_are_private(data_dir: Path) -> None:
    proc = run_cli("token", "--scope", "system/*.rs", "--ttl", "120", **_env(data_dir))
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert "\n" not in token and token.count(".") == 2
    principal = _service(data_dir).verify(token)
    assert (principal.kind, principal.role, principal.subject) == (
        "service",
        "service",
        "carebase-cli",
    )
    assert principal.scopes == frozenset({"system/*.rs"})
    assert principal.expires_at is not None
    for f in (data_dir / "keys").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_user_token_carries_the_user_and_drops_what_the_role_may_not_hold(
    data_dir: Path,
) -> None:
    db = f"sqlite:///{data_dir / 'carebase.db'}"
    added = run_cli(
        "users",
        "add",
        "frank",
        "--role",
        "front-desk",
        "--password-stdin",
        input=PASSWORD,
        **_env(data_dir),
    )
    assert added.returncode == 0, added.stderr
    proc = run_cli(
        "token",
        "--scope",
        "user/Patient.cruds user/Observation.rs openid",
        "--user",
        "Frank",
        "--database",
        db,
        **_env(data_dir),
    )
    assert proc.returncode == 0, proc.stderr
    assert "user/Observation.rs" in proc.stderr and "front-desk" in proc.stderr
    principal = _service(data_dir).verify(proc.stdout.strip())
    assert principal.scopes == frozenset({"user/Patient.crus", "openid"})
    assert (principal.kind, principal.role, principal.username) == ("user", "front-desk", "frank")
    assert principal.fhir_user is not None and principal.fhir_user.startswith("Practitioner/")


def test_patient_user_token_is_for_their_own_record(data_dir: Path) -> None:
    db = f"sqlite:///{data_dir / 'carebase.db'}"
    store = open_store(db)
    store.migrate()
    with store.transaction() as tx:
        for pid in ("p1", "p2"):
            tx.update("Patient", pid, {"resourceType": "Patient", "id": pid})
    store.close()
    added = run_cli(
        "users",
        "add",
        "pat",
        "--role",
        "patient",
        "--patient",
        "p1",
        "--password-stdin",
        input=PASSWORD,
        **_env(data_dir),
    )
    assert added.returncode == 0, added.stderr
    proc = run_cli("token", "--scope", "patient/*.rs", "--user", "pat", **_env(data_dir))
    assert proc.returncode == 0, proc.stderr
    principal = _service(data_dir).verify(proc.stdout.strip())
    assert (principal.patient, principal.fhir_user) == ("p1", "Patient/p1")
    other = run_cli(
        "token", "--scope", "patient/*.rs", "--user", "pat", "--patient", "p2", **_env(data_dir)
    )
    assert_one_line_error(other, "own record")
    escalate = run_cli("token", "--scope", "system/*.cruds", "--user", "pat", **_env(data_dir))
    assert_one_line_error(escalate, "No requested scope is allowed for role patient")


@pytest.mark.parametrize(
    "scope",
    ["patient/Observation.xyz", "user/observation.read", "system/*.", "bogus/thing", "   "],
)
def test_malformed_scopes_exit_2(data_dir: Path, scope: str) -> None:
    proc = run_cli("token", "--scope", scope, **_env(data_dir))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "--scope" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_bad_user_patient_and_ttl(data_dir: Path) -> None:
    assert_one_line_error(
        run_cli("token", "--scope", "user/*.rs", "--user", "ghost", **_env(data_dir)),
        "no user 'ghost'",
    )
    assert_one_line_error(
        run_cli("token", "--scope", "patient/*.rs", "--patient", "nope", **_env(data_dir)),
        "Patient/nope does not exist",
    )
    assert_one_line_error(
        run_cli("token", "--scope", "patient/*.rs", **_env(data_dir)), "--patient"
    )
    too_long = run_cli("token", "--scope", "system/*.rs", "--ttl", "999999", **_env(data_dir))
    assert too_long.returncode == 2 and "Traceback" not in too_long.stderr


def test_keys_rotate_and_list(data_dir: Path) -> None:
    first = run_cli("token", "--scope", "system/*.rs", **_env(data_dir))
    assert first.returncode == 0, first.stderr
    rotated = run_cli("keys", "rotate", **_env(data_dir))
    assert rotated.returncode == 0, rotated.stderr
    ring = KeyRing.open(data_dir / "keys")
    assert f"New active signing key {ring.active.kid}" in rotated.stdout
    listed = run_cli("keys", "list", **_env(data_dir))
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if any(k.kid in line for k in ring.kept())]
    assert len(lines) == 2
    assert ring.active.kid in next(line for line in lines if "yes" in line)
    # The token signed before the rotation still verifies.
    assert _service(data_dir).verify(first.stdout.strip()).subject == "carebase-cli"
