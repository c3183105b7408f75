"""The body cipher alone: framing, binding to the row, key rings, clear errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from carebase.config import Settings
from carebase.errors import StorageError
from carebase.store.body_cipher import (
    MAGIC,
    BodyCipher,
    is_sealed,
    key_id,
    new_key,
    open_body,
    read_ring_file,
    write_ring_file,
)

BODY = b'{"resourceType":"Patient","id":"p1","meta":{"versionId":"1"}}'


def test_seal_frames_and_binds_to_the_row() -> None:
    key = new_key()
    cipher = BodyCipher([key])
    sealed = cipher.seal(BODY, "Patient", "p1", 1)
    assert sealed.startswith(MAGIC + key_id(key).encode())
    assert len(sealed) == 4 + 8 + 12 + len(BODY) + 16
    assert BODY not in sealed and b"Patient" not in sealed
    assert is_sealed(sealed) and not is_sealed(BODY)
    assert cipher.open(sealed, "Patient", "p1", 1) == BODY
    assert cipher.seal(BODY, "Patient", "p1", 1) != sealed  # a fresh nonce every time
    for other in (("Patient", "p2", 1), ("Patient", "p1", 2), ("Practitioner", "p1", 1)):
        with pytest.raises(StorageError, match="failed authentication"):
            cipher.open(sealed, *other)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(StorageError, match="altered or copied"):
        cipher.open(bytes(tampered), "Patient", "p1", 1)


def test_wrong_or_missing_key_is_a_clear_error() -> None:
    sealed = BodyCipher([new_key()]).seal(BODY, "Patient", "p1", 1)
    with pytest.raises(StorageError, match="not in the key ring"):
        BodyCipher([new_key()]).open(sealed, "Patient", "p1", 1)
    with pytest.raises(StorageError, match="no encryption key is configured"):
        open_body(sealed, "Patient", "p1", 1, None)
    assert open_body(BODY, "Patient", "p1", 1, None) == BODY  # plaintext reads without a key
    with pytest.raises(StorageError, match="sealed format"):
        BodyCipher([new_key()]).open(MAGIC + b"short", "Patient", "p1", 1)


def test_ring_file_round_trip_permissions_and_active_key(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    ring = tmp_path / "keys" / "ring"
    write_ring_file(ring, [old, new])
    assert ring.stat().st_mode & 0o777 == 0o600
    assert read_ring_file(ring) == [old, new]
    cipher = BodyCipher.from_settings(Settings(encryption_key_file=str(ring)))
    assert cipher is not None and cipher.active_id == key_id(new)
    assert set(cipher.key_ids) == {key_id(old), key_id(new)}
    under_old = BodyCipher([old]).seal(BODY, "Patient", "p1", 1)
    assert cipher.open(under_old, "Patient", "p1", 1) == BODY
    ring.chmod(0o644)
    with pytest.raises(StorageError, match="chmod 600"):
        read_ring_file(ring)
    ring.chmod(0o600)
    ring.write_text("# only a comment\n")
    with pytest.raises(StorageError, match="holds no key"):
        read_ring_file(ring)
    ring.write_text("bm90IGEga2V5\n")  # base64 of "not a key"
    with pytest.raises(StorageError, match="line 1: a key must be 32 bytes"):
        read_ring_file(ring)
    with pytest.raises(StorageError, match="does not exist"):
        read_ring_file(tmp_path / "absent")


def test_a_reader_picks_up_keys_added_to_its_ring_file(tmp_path: Path) -> None:
    ring = tmp_path / "ring"
    first = new_key()
    write_ring_file(ring, [first])
    reader = BodyCipher(read_ring_file(ring), source=ring)
    second = new_key()
    write_ring_file(ring, [first, second])  # a rotation run elsewhere
    sealed = BodyCipher([first, second]).seal(BODY, "Patient", "p1", 1)
    assert reader.open(sealed, "Patient", "p1", 1) == BODY
    assert reader.active_id == key_id(second)  # and it seals new bodies with the new key


def test_key_from_the_environment() -> None:
    key = new_key()
    text = base64.b64encode(key).decode()
    cipher = BodyCipher.from_settings(Settings(encryption_key=text))
    assert cipher is not None and cipher.active_id == key_id(key)
    assert BodyCipher.from_settings(Settings()) is None
    with pytest.raises(StorageError, match="CAREBASE_ENCRYPTION_KEY: not base64"):
        BodyCipher.from_settings(Settings(encryption_key="%%%"))
    with pytest.raises(StorageError, match="not both"):
        BodyCipher.from_settings(Settings(encryption_key=text, encryption_key_file="/x"))
