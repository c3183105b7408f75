"""Token signing keys: generated on first start, kept as 0600 files, rotatable, published as JWKS.

The key ring lives in one directory (`Settings.keys_dir`): one PKCS#8 PEM file per key and
`ring.json` naming the active key. Rotation makes a new key active and keeps the previous ones
for verification, so tokens signed before a rotation stay valid until they expire. Workers that
meet an unknown `kid` reread the directory (another process may have rotated).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from carebase.errors import StorageError

#: The JWS algorithm of every token carebase signs.
SIGNING_ALGORITHM = "RS256"
#: Keys kept for verification after rotation (the active one included).
KEPT_KEYS = 3
_RING_FILE = "ring.json"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the ring."""

    kid: str
    created: float
    private: rsa.RSAPrivateKey

    @property
    def public(self) -> rsa.RSAPublicKey:
        """The public half (verifies tokens)."""
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK with `kid`, `alg` and `use`."""
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        jwk.update({"kid": self.kid, "alg": SIGNING_ALGORITHM, "use": "sig"})
        return jwk


class KeyRing:
    """The signing keys in one directory: the active key signs, all kept keys verify."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._active = ""
        self._last_reload = 0.0

    @classmethod
    def open(cls, directory: Path) -> KeyRing:
        """The ring in `directory`, creating the directory and a first key if there is none."""
        ring = cls(directory)
        with ring._lock, ring._files_locked():
            if not (directory / _RING_FILE).exists():
                ring._write_new_key(keep=())
            ring._load()
        return ring

    @contextlib.contextmanager
    def _files_locked(self) -> Iterator[None]:
        """Hold the directory's lock file: worker processes starting at once must not both
        create a first key, nor read a ring another process is rotating."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @property
    def active(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._keys[self._active]

    def key(self, kid: str) -> SigningKey | None:
        """The kept key with this `kid`, rereading the directory (at most once a second) when
        it is unknown here; None if no kept key has it."""
        found = self._keys.get(kid)
        if found is None and time.monotonic() - self._last_reload > 1.0:
            with self._lock, self._files_locked():
                self._load()
            found = self._keys.get(kid)
        return found

    def kept(self) -> list[SigningKey]:
        """Every kept key, newest first (the active one among them)."""
        return sorted(self._keys.values(), key=lambda k: -k.created)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of every kept key (for `/oauth/jwks`)."""
        keys = sorted(self._keys.values(), key=lambda k: -k.created)
        return {"keys": [k.jwk() for k in keys]}

    def rotate(self) -> SigningKey:
        """Make a new key active; keep the newest `KEPT_KEYS - 1` old ones for verification."""
        with self._lock, self._files_locked():
            self._load()
            kept = sorted(self._keys.values(), key=lambda k: -k.created)[: KEPT_KEYS - 1]
            self._write_new_key(keep=kept)
            self._load()
            return self.active

    # --- files -------------------------------------------------------------------------------
    def _write_new_key(self, keep: tuple[SigningKey, ...] | list[SigningKey]) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = uuid.uuid4().hex[:16]
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(self.directory / f"{kid}.pem", pem)
        entries = [{"kid": kid, "created": time.time()}]
        entries += [{"kid": k.kid, "created": k.created} for k in keep]
        ring = json.dumps({"active": kid, "keys": entries}, indent=1).encode()
        _write_private(self.directory / _RING_FILE, ring)
        kept = {e["kid"] for e in entries}
        for pem_file in self.directory.glob("*.pem"):
            if pem_file.stem not in kept:
                pem_file.unlink()

    def _load(self) -> None:
        self._last_reload = time.monotonic()
        try:
            ring = json.loads((self.directory / _RING_FILE).read_bytes())
            keys = {}
            for entry in ring["keys"]:
                pem = (self.directory / f"{entry['kid']}.pem").read_bytes()
                private = _load_private(pem, entry["kid"])
                keys[entry["kid"]] = SigningKey(entry["kid"], float(entry["created"]), private)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"The signing keys in {self.directory} cannot be read ({exc}); restore them "
                "or move the directory away to generate new ones (signed tokens then end)"
            ) from exc
        if ring["active"] not in keys:
            raise StorageError(f"{self.directory}/{_RING_FILE} names no kept active key")
        self._keys, self._active = keys, ring["active"]


@functools.lru_cache(maxsize=64)
def _load_private(pem: bytes, kid: str) -> rsa.RSAPrivateKey:
    """The RSA key in `pem`. Cached by content: loading validates the key (tens of ms), and
    every process (and every worker's reload) would otherwise pay that per key."""
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"{kid}.pem is not an RSA key")
    return private


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only (0600)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
