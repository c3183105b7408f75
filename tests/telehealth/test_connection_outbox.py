"""A peer that does not read never holds up its senders: frames queue in its outbox, and
past `MAX_OUTBOX` the peer is dropped (it may reconnect and resume)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from carebase.telehealth.join_tokens import JoinGrant
from carebase.telehealth.signalling import MAX_OUTBOX, Connection

GRANT = JoinGrant("r1", "patient", "patient-p1", "P", "u-p1", None, 0, "jti")


class _StuckSocket:
    """A WebSocket whose peer stopped reading: every send waits forever."""

    application_state = None

    def __init__(self) -> None:
        self.sent = 0
        self.closed_with: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        self.sent += 1
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = (code, reason)


class _Socket(_StuckSocket):
    async def send_text(self, text: str) -> None:
        self.sent += 1


@pytest.mark.asyncio
async def test_a_stuck_peer_is_dropped_without_blocking_the_sender() -> None:
    ws: Any = _StuckSocket()
    conn = Connection(ws, GRANT)
    conn.start()
    for i in range(MAX_OUTBOX + 5):
        await asyncio.wait_for(conn.send({"type": "offer", "n": i}), 0.1)  # never waits
    assert conn.closed
    await asyncio.sleep(0)
    conn.stop()
    assert ws.sent == 1  # the writer is stuck on the first frame; the sender was not


@pytest.mark.asyncio
async def test_close_goes_out_after_the_queued_frames() -> None:
    ws: Any = _Socket()
    conn = Connection(ws, GRANT)
    conn.start()
    for i in range(3):
        await conn.send({"type": "room", "n": i})
    await conn.close(4001, "ended")
    await conn.send({"type": "late"})  # after close: dropped
    assert conn.writer is not None
    await asyncio.wait_for(conn.writer, 1)
    assert ws.sent == 3 and ws.closed_with == (4001, "ended")
