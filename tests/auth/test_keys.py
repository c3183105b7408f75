"""The signing key ring: 0600 files, rotation keeping old tokens valid, JWKS."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from carebase.auth.keys import KEPT_KEYS, KeyRing
from carebase.auth.tokens import TokenService
from carebase.errors import StorageError, Unauthorized


def _service(ring: KeyRing) -> TokenService:
    return TokenService(ring, issuer="http://testserver", audience="http://testserver/fhir")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_open_creates_a_private_key_readable_by_the_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = KeyRing.open(directory)
    assert _mode(directory) == 0o700
    files = sorted(directory.iterdir())
    # .lock serialises processes creating or rotating the ring
    assert {f.name for f in files} == {".lock", "ring.json", f"{ring.active.kid}.pem"}
    for f in files:
        assert _mode(f) == 0o600, f
    assert b"PRIVATE KEY" in (directory / f"{ring.active.kid}.pem").read_bytes()
    # Opening again finds the same key.
    assert KeyRing.open(directory).active.kid == ring.active.kid


def test_rotation_keeps_old_tokens_valid_until_the_key_is_dropped(tmp_path: Path) -> None:
    ring = KeyRing.open(tmp_path / "keys")
    service = _service(ring)
    old_kid = ring.active.kid
    old_token, _ = service.issue(subject="s", scopes=["system/*.rs"], kind="service")
    new = ring.rotate()
    assert new.kid != old_kid and ring.active.kid == new.kid
    assert service.verify(old_token).subject == "s"
    new_token, _ = service.issue(subject="t", scopes=["system/*.rs"], kind="service")
    assert service.verify(new_token).subject == "t"
    for _ in range(KEPT_KEYS - 1):
        ring.rotate()
    assert old_kid not in {k.kid for k in ring.kept()}
    assert not (tmp_path / "keys" / f"{old_kid}.pem").exists()
    with pytest.raises(Unauthorized, match="not signed by a key of this server"):
        _service(ring).verify(old_token)
    for f in (tmp_path / "keys").iterdir():
        assert _mode(f) == 0o600, f


def test_jwks_publishes_public_keys_only(tmp_path: Path) -> None:
    ring = KeyRing.open(tmp_path / "keys")
    ring.rotate()
    jwks = ring.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [k.kid for k in ring.kept()]
    for jwk in jwks["keys"]:
        assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
        assert {"n", "e"} <= set(jwk) and not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)


def test_a_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    server = KeyRing.open(tmp_path / "keys")
    admin = KeyRing.open(tmp_path / "keys")
    admin.rotate()
    token, _ = _service(admin).issue(subject="s", scopes=["system/*.rs"], kind="service")
    time.sleep(1.05)  # the ring rereads its directory at most once a second
    assert _service(server).verify(token).subject == "s"


def test_unreadable_ring_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = KeyRing.open(directory)
    (directory / f"{ring.active.kid}.pem").write_text("garbage")
    with pytest.raises(StorageError, match="cannot be read"):
        KeyRing.open(directory)
