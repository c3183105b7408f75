"""Database rows as StoredResource values (shared by the store and its transactions)."""

from __future__ import annotations

from typing import Any, cast

from carebase.store.base import Interaction, StoredResource
from carebase.store.body_cipher import BodyCipher, open_body
from carebase.store.clock import ms_to_datetime


def row_to_stored(row: Any, cipher: BodyCipher | None = None) -> StoredResource:
    """A resource row (type, id, version, last_updated, deleted, body) or a version row
    (type, id, version, last_updated, interaction, body) as a StoredResource; an encrypted
    body is opened with `cipher` (StorageError when it cannot be)."""
    type_, id_, version, last_updated, state, body = row
    if body is not None:
        body = bytes(body)
        if body[:1] == b"\x00":  # sealed (plaintext JSON starts with "{"): one byte test
            body = open_body(body, type_, id_, version, cipher)
    interaction: Interaction
    if isinstance(state, str):
        interaction = cast(Interaction, state)
    else:
        interaction = "delete" if state else ("create" if version == 1 else "update")
    return StoredResource(
        type=type_,
        id=id_,
        version=version,
        last_updated=ms_to_datetime(last_updated),
        deleted=interaction == "delete",
        body=body,
        interaction=interaction,
    )
