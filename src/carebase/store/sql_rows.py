"""Database rows as StoredResource values (shared by the store and its transactions)."""

from __future__ import annotations

from typing import Any, cast

from carebase.store.base import Interaction, StoredResource
from carebase.store.clock import ms_to_datetime


def row_to_stored(row: Any) -> StoredResource:
    """A resource row (type, id, version, last_updated, deleted, body) or a version row
    (type, id, version, last_updated, interaction, body) as a StoredResource."""
    type_, id_, version, last_updated, state, body = row
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
        body=bytes(body) if body is not None else None,
        interaction=interaction,
    )
