"""The batching of bus events: one message per round trip, in order, within the size limit."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from carebase.telehealth.bus import BatchingBus, channel_for


class _Recording(BatchingBus):
    limit = 200

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    async def _send(self, message: bytes) -> None:
        self.sent.append(message)
        await asyncio.sleep(0.01)  # a round trip: events published meanwhile batch up


@pytest.mark.asyncio
async def test_events_published_during_a_send_go_out_together_in_order() -> None:
    bus = _Recording()
    got: list[dict[str, Any]] = []

    async def handler(event: dict[str, Any]) -> None:
        got.append(event)

    await bus.start(handler)
    bus._start_sender()
    events = [{"kind": "relay", "n": i, "pad": "x" * (300 if i == 7 else 10)} for i in range(30)]
    for event in events:
        await bus.publish(event)
    await asyncio.sleep(0.2)
    await bus._stop_tasks()
    assert len(bus.sent) < len(events)
    for message in bus.sent:
        batch = orjson.loads(message)
        assert isinstance(batch, list)
        assert len(message) <= bus.limit or len(batch) == 1  # an oversized event goes alone
        for event in batch:
            await bus._deliver(event)
    assert [e["n"] for e in got] == list(range(30))


def test_the_notify_channel_depends_on_database_and_schema() -> None:
    a = channel_for("postgresql://u@h/db?options=-csearch_path%3Ds1")
    b = channel_for("postgresql://u@h/db?options=-csearch_path%3Ds2")
    assert a != b and a == channel_for("postgresql://other@h2/db?options=-csearch_path%3Ds1")
    assert a.startswith("carebase_telehealth_") and len(a) <= 63
