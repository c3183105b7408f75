"""How signalling reaches participants connected to other workers: a publish/subscribe bus.

Every worker subscribes to one channel and gets every event (a JSON object naming its room);
it delivers those meant for the sockets it holds. `MemoryBus` is one process (SQLite, and
tests); `PostgresBus` uses LISTEN/NOTIFY on the database (events over NOTIFY's 8,000-byte
payload limit go through the `telehealth_signal` table, the notification carrying the row
id); `RedisBus` uses Redis pub/sub. Events published by one worker arrive at every worker,
itself included, in the order the database or Redis received them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from carebase.errors import CarebaseError

log = logging.getLogger("carebase.telehealth.bus")
Handler = Callable[[dict[str, Any]], Awaitable[None]]
#: Largest NOTIFY payload sent inline (PostgreSQL refuses 8,000 bytes and more).
NOTIFY_LIMIT = 7900


class Bus(ABC):
    """Publish events to every worker; `start(handler)` delivers each event to `handler`."""

    handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self.handler = handler

    @abstractmethod
    async def publish(self, event: dict[str, Any]) -> None:
        """Send `event` to every worker (this one included)."""

    async def close(self) -> None:  # noqa: B027 - buses holding connections override it
        """Stop listening and release connections."""

    async def _deliver(self, event: dict[str, Any]) -> None:
        if self.handler is not None:
            try:
                await self.handler(event)
            except Exception:  # a bad event must not stop the listener
                log.exception("telehealth event not delivered")


class MemoryBus(Bus):
    """One process: events are handed to the handler directly (no serialisation)."""

    async def publish(self, event: dict[str, Any]) -> None:
        await self._deliver(event)


def channel_for(url: str) -> str:
    """The NOTIFY channel of one database and schema (`search_path` option), so servers on
    different schemas of one database do not hear each other."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    key = f"{info.get('dbname', '')}|{info.get('options', '')}"
    return "carebase_telehealth_" + hashlib.sha256(key.encode()).hexdigest()[:12]


class PostgresBus(Bus):
    """LISTEN/NOTIFY on the store's database; `spill`/`fetch` keep and read oversized events
    (the `telehealth_signal` table, through a thread: they are synchronous store calls)."""

    def __init__(
        self, url: str, spill: Callable[[str], int], fetch: Callable[[int], str | None]
    ) -> None:
        self.url = url
        self.channel = channel_for(url)
        self.spill, self.fetch = spill, fetch
        self._listen: Any = None
        self._send: Any = None
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self, handler: Handler) -> None:
        import psycopg

        await super().start(handler)
        try:
            self._listen = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            self._send = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            await self._listen.execute(f"LISTEN {self.channel}")
        except psycopg.Error as exc:
            raise CarebaseError(f"The telehealth bus cannot LISTEN on PostgreSQL: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name="telehealth-pg-bus")

    async def _run(self) -> None:
        async for notice in self._listen.notifies():
            payload: str = notice.payload
            if payload.startswith("@"):
                text = await asyncio.to_thread(self.fetch, int(payload[1:]))
                if text is None:
                    log.warning("telehealth event %s expired before it was read", payload)
                    continue
                payload = text
            await self._deliver(orjson.loads(payload))

    async def publish(self, event: dict[str, Any]) -> None:
        payload = orjson.dumps(event).decode()
        if len(payload.encode()) > NOTIFY_LIMIT:
            payload = f"@{await asyncio.to_thread(self.spill, payload)}"
        async with self._send_lock:
            await self._send.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for conn in (self._listen, self._send):
            if conn is not None:
                await conn.close()


class RedisBus(Bus):
    """Redis pub/sub on one channel."""

    def __init__(self, url: str, channel: str = "carebase_telehealth") -> None:
        self.url, self.channel = url, channel
        self._client: Any = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, handler: Handler) -> None:
        try:
            import redis.asyncio as redis
        except ImportError as exc:
            raise CarebaseError("CAREBASE_TELEHEALTH_BUS=redis needs the redis package") from exc
        await super().start(handler)
        self._client = redis.from_url(self.url)
        self._pubsub = self._client.pubsub()
        try:
            await self._pubsub.subscribe(self.channel)
        except Exception as exc:
            raise CarebaseError(f"The telehealth bus cannot reach Redis: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name="telehealth-redis-bus")

    async def _run(self) -> None:
        async for message in self._pubsub.listen():
            if message.get("type") == "message":
                await self._deliver(orjson.loads(message["data"]))

    async def publish(self, event: dict[str, Any]) -> None:
        await self._client.publish(self.channel, orjson.dumps(event))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()
