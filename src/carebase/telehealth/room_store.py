"""Visit rooms in the database (`telehealth_room`, migration 9): every worker changes a room
through `RoomStore.change`, which loads the room's state under a row lock (`FOR UPDATE` on
PostgreSQL; SQLite writers run one at a time), applies a `room_state` transition and writes
it back in one transaction, so workers never lose each other's changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import orjson

from carebase.store.sql_store import SqlStore
from carebase.telehealth.room_state import Room

TELEHEALTH_TABLES = ("telehealth_room", "telehealth_signal")
T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


class RoomStore:
    """Load and change rooms; `capacity` is the participant limit of new rooms."""

    def __init__(
        self, store: SqlStore, capacity: int = 4, signal_retention_seconds: int = 60
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.signal_retention_ms = signal_retention_seconds * 1000

    def load(self, room_id: str) -> Room | None:
        with self.store.reading() as cur:
            row = cur.execute(
                self.store.q("SELECT state FROM telehealth_room WHERE id = ?"), (room_id,)
            ).fetchone()
        return Room.from_json(orjson.loads(row[0])) if row else None

    def change(self, room_id: str, transition: Callable[[Room], T]) -> tuple[Room, T]:
        """Apply `transition` to the room (made on first use) and store the result; an
        exception from the transition leaves the room as it was."""
        q = self.store.q
        lock = " FOR UPDATE" if self.store.dialect == "postgresql" else ""
        with self.store.writing() as cur:
            row = cur.execute(
                q(f"SELECT state FROM telehealth_room WHERE id = ?{lock}"), (room_id,)
            ).fetchone()
            if row is None:
                fresh = Room(room_id, self.capacity)
                cur.execute(
                    q(
                        "INSERT INTO telehealth_room (id, state, updated) VALUES (?, ?, ?)"
                        " ON CONFLICT (id) DO NOTHING"
                    ),
                    (room_id, orjson.dumps(fresh.to_json()).decode(), now_ms()),
                )
                row = cur.execute(
                    q(f"SELECT state FROM telehealth_room WHERE id = ?{lock}"), (room_id,)
                ).fetchone()
            room = Room.from_json(orjson.loads(row[0]))
            result = transition(room)
            room.seq += 1
            cur.execute(
                q("UPDATE telehealth_room SET state = ?, updated = ? WHERE id = ?"),
                (orjson.dumps(room.to_json()).decode(), now_ms(), room_id),
            )
        return room, result

    # --- oversized signalling messages (PostgreSQL NOTIFY carries at most 8,000 bytes) ------
    def put_signal(self, payload: str) -> int:
        q = self.store.q
        with self.store.writing() as cur:
            row = cur.execute(
                q("INSERT INTO telehealth_signal (payload, created) VALUES (?, ?) RETURNING id"),
                (payload, now_ms()),
            ).fetchone()
        return int(row[0])

    def get_signal(self, signal_id: int) -> str | None:
        with self.store.reading() as cur:
            row = cur.execute(
                self.store.q("SELECT payload FROM telehealth_signal WHERE id = ?"), (signal_id,)
            ).fetchone()
        return str(row[0]) if row else None

    # --- retention -------------------------------------------------------------------------
    def purge(self, room_retention_seconds: int, now: int | None = None) -> tuple[int, int]:
        """Delete rooms unchanged for `room_retention_seconds` and signalling messages older
        than the signal retention; (rooms, messages) deleted."""
        now = now_ms() if now is None else now
        q = self.store.q
        with self.store.writing() as cur:
            rooms = cur.execute(
                q("DELETE FROM telehealth_room WHERE updated < ?"),
                (now - room_retention_seconds * 1000,),
            ).rowcount
            signals = cur.execute(
                q("DELETE FROM telehealth_signal WHERE created < ?"),
                (now - self.signal_retention_ms,),
            ).rowcount
        return int(rooms), int(signals)
