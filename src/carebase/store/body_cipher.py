"""Encryption at rest of stored resource bodies (AES-256-GCM), optional and off by default.

A sealed body is framed as
    MAGIC (4 bytes, "\\x00CB1") | key id (8 ASCII hex chars) | nonce (12 random bytes) |
    ciphertext + 16-byte tag
and its associated data is "Type/id/_history/version", so a body copied into another row
(another resource, or another version of the same one) fails authentication instead of being
served as that row. Plaintext bodies are JSON and start with "{", never with MAGIC's zero
byte: a database written before encryption was enabled keeps reading (mixed mode).

Keys come from a key ring file (`CAREBASE_ENCRYPTION_KEY_FILE`: one base64 32-byte key per
line, `#` comments, the last key is the active one that seals new bodies; the file must not be
readable by group or others) or one key in `CAREBASE_ENCRYPTION_KEY`. A key's id is derived
from the key itself (a truncated SHA-256), so the same key has the same id wherever it is
configured. Any failure to open a sealed body is a StorageError naming the row and the key,
never garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carebase.config import Settings
from carebase.errors import StorageError

MAGIC = b"\x00CB1"
KEY_ID_BYTES = 8
NONCE_BYTES = 12
#: MAGIC and key id: the first bytes of every body sealed with one key (status, rotation)
PREFIX_BYTES = len(MAGIC) + KEY_ID_BYTES
_HEADER = PREFIX_BYTES + NONCE_BYTES
KEY_BYTES = 32


def key_id(key: bytes) -> str:
    """The id of a key: 8 hex characters of SHA-256 over a label and the key."""
    return hashlib.sha256(b"carebase body key\x00" + key).hexdigest()[:KEY_ID_BYTES]


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def is_sealed(body: bytes) -> bool:
    """Whether a stored body is encrypted (plaintext JSON starts with `{`)."""
    return body[:1] == b"\x00"


def sealed_prefix(kid: str) -> bytes:
    """The first PREFIX_BYTES bytes of every body sealed with key `kid`."""
    return MAGIC + kid.encode("ascii")


def _associated_data(type_: str, id_: str, version: int) -> bytes:
    return f"{type_}/{id_}/_history/{version}".encode()


def decode_key(text: str, where: str) -> bytes:
    """A base64 key as bytes; StorageError naming `where` unless it is 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StorageError(f"{where}: not base64 ({exc})") from exc
    if len(key) != KEY_BYTES:
        raise StorageError(f"{where}: a key must be {KEY_BYTES} bytes (AES-256), not {len(key)}")
    return key


def encode_key(key: bytes) -> str:
    """A key as the base64 text of a key ring line."""
    return base64.b64encode(key).decode("ascii")


def read_ring_file(path: Path) -> list[bytes]:
    """The keys of a key ring file, oldest first (the last one is active).

    Refuses a file that group or others may read or write, like ssh does with private keys.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise StorageError(f"The encryption key file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"Cannot read the encryption key file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StorageError(
            f"The encryption key file {path} is accessible to other users "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
        )
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(decode_key(line, f"{path} line {number}"))
    if not keys:
        raise StorageError(f"The encryption key file {path} holds no key")
    return keys


def write_ring_file(path: Path, keys: list[bytes]) -> None:
    """Write a key ring file atomically with mode 0600 (the last key is the active one)."""
    lines = [
        "# carebase encryption key ring: one base64 AES-256 key per line, the last is active.",
        "# Keep every key that still seals rows (see `carebase encryption status`).",
        *(encode_key(key) for key in keys),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BodyCipher:
    """Seals and opens resource bodies with a ring of AES-256-GCM keys."""

    def __init__(self, keys: list[bytes], source: Path | None = None) -> None:
        if not keys:
            raise StorageError("An encryption key ring needs at least one key")
        self._source = source
        self._load(keys)

    def _load(self, keys: list[bytes]) -> None:
        aeads = {key_id(key): AESGCM(key) for key in keys}
        active = key_id(keys[-1])
        # One tuple swapped at once: a thread sealing during a reload never pairs one key's
        # id with another key's ciphertext.
        self._state = (aeads, active, aeads[active], sealed_prefix(active))

    @property
    def active_id(self) -> str:
        """The id of the key that seals new bodies."""
        return self._state[1]

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyCipher | None:
        """The cipher the settings configure, or None when encryption is off."""
        if settings.encryption_key_file and settings.encryption_key:
            raise StorageError(
                "Set CAREBASE_ENCRYPTION_KEY_FILE or CAREBASE_ENCRYPTION_KEY, not both"
            )
        if settings.encryption_key_file:
            path = Path(settings.encryption_key_file)
            return cls(read_ring_file(path), source=path)
        if settings.encryption_key:
            return cls([decode_key(settings.encryption_key, "CAREBASE_ENCRYPTION_KEY")])
        return None

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the keys in the ring."""
        return tuple(self._state[0])

    @property
    def source(self) -> Path | None:
        """The key ring file, or None for a key from the environment."""
        return self._source

    def seal(self, body: bytes, type_: str, id_: str, version: int) -> bytes:
        """`body` encrypted with the active key, bound to (type, id, version)."""
        _aeads, _kid, aead, prefix = self._state
        nonce = os.urandom(NONCE_BYTES)
        return prefix + nonce + aead.encrypt(nonce, body, _associated_data(type_, id_, version))

    def open(self, data: bytes, type_: str, id_: str, version: int) -> bytes:
        """The plaintext of a sealed body of row (type, id, version); StorageError if it
        cannot be opened (unknown key, altered or moved ciphertext)."""
        where = f"{type_}/{id_} version {version}"
        if data[: len(MAGIC)] != MAGIC or len(data) < _HEADER + 16:
            raise StorageError(f"The stored body of {where} is not in carebase's sealed format")
        kid = data[len(MAGIC) : PREFIX_BYTES].decode("ascii", "replace")
        aead = self._state[0].get(kid) or self._reloaded(kid)
        if aead is None:
            raise StorageError(
                f"The stored body of {where} is encrypted with key {kid}, which is not in the "
                "key ring; add that key back (CAREBASE_ENCRYPTION_KEY_FILE)"
            )
        try:
            return aead.decrypt(
                data[PREFIX_BYTES:_HEADER], data[_HEADER:], _associated_data(type_, id_, version)
            )
        except InvalidTag as exc:
            raise StorageError(
                f"The stored body of {where} failed authentication with key {kid}: it was "
                "altered or copied from another row; restore it from a backup"
            ) from exc

    def _reloaded(self, kid: str) -> AESGCM | None:
        """Re-read the key ring file (a rotation elsewhere may have added `kid`)."""
        if self._source is None:
            return None
        try:
            self._load(read_ring_file(self._source))
        except StorageError:
            return None
        return self._state[0].get(kid)

    def needs_resealing(self, data: bytes) -> bool:
        """Whether a stored body is plaintext or sealed with a key other than the active one."""
        return data[:PREFIX_BYTES] != self._state[3]


def open_body(data: bytes, type_: str, id_: str, version: int, cipher: BodyCipher | None) -> bytes:
    """A stored body as plaintext: as is when plaintext, opened when sealed.

    Raises StorageError for a sealed body when no key is configured.
    """
    if not is_sealed(data):
        return data
    if cipher is None:
        raise StorageError(
            f"The stored body of {type_}/{id_} version {version} is encrypted but no encryption "
            "key is configured; set CAREBASE_ENCRYPTION_KEY_FILE or CAREBASE_ENCRYPTION_KEY"
        )
    return cipher.open(data, type_, id_, version)
