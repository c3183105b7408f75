"""How signalling reaches participants connected to other workers: a publish/subscribe bus.

Every worker subscribes to one channel and gets every event (a JSON object naming its room);
it delivers those meant for the sockets it holds. `MemoryBus` is one process (SQLite, and
tests): nothing to send, the hub delivers locally. `PostgresBus` uses LISTEN/NOTIFY on the
database and `RedisBus` Redis pub/sub. Both batch: events published while a send is under
way go out together in the next message (a JSON array), so a busy worker makes one round
trip for many events instead of queueing one per event. A NOTIFY payload is at most 8,000
bytes: larger batches are split, and a single larger event goes through the
`telehealth_signal` table, the notification carrying the row id. Events arrive at every
worker, the sender included (the hub skips its own), in the order the database or Redis
received them.
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
    #: whether other workers can be on this bus (False: the hub's local delivery is all)
    shared: bool = True

    async def start(self, handler: Handler) -> None:
        self.handler = handler

    @abstractmethod
    async def publish(self, event: dict[str, Any]) -> None:
        """Send `event` to every worker (this one included)."""

    async def close(self) -> None:  # noqa: B027 - buses holding connections override it
        """Stop listening and release connections."""

    async def _deliver_payload(self, payload: bytes | str) -> None:
        """Deliver the events of one received message (an event or an array of events)."""
        value = orjson.loads(payload)
        for event in value if isinstance(value, list) else [value]:
            await self._deliver(event)

    async def _deliver(self, event: dict[str, Any]) -> None:
        if self.handler is not None:
            try:
                await self.handler(event)
            except Exception:  # a bad event must not stop the listener
                log.exception("telehealth event not delivered")


class MemoryBus(Bus):
    """One process: there is nobody else to tell."""

    shared = False

    async def publish(self, event: dict[str, Any]) -> None:
        return None


class BatchingBus(Bus):
    """A bus that sends what was published meanwhile in one message per round trip."""

    #: the largest message `_send` takes, bytes (None: no limit)
    limit: int | None = None

    def __init__(self) -> None:
        self._queue: list[bytes] = []
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        #: the task receiving other workers' messages (set by `start`)
        self._task: asyncio.Task[None] | None = None

    def _start_sender(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="telehealth-bus-sender")

    async def publish(self, event: dict[str, Any]) -> None:
        self._queue.append(orjson.dumps(event))
        self._wakeup.set()

    async def _send_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            queued, self._queue = self._queue, []
            for message in self._messages(queued):
                try:
                    await self._send(message)
                except Exception:  # the bus connection failed: log, keep serving
                    log.exception("telehealth events not published")

    def _messages(self, events: list[bytes]) -> list[bytes]:
        """Events packed into JSON arrays of at most `limit` bytes each."""
        messages: list[bytes] = []
        batch: list[bytes] = []
        size = 2
        for event in events:
            if self.limit is not None and batch and size + len(event) + 1 > self.limit:
                messages.append(b"[" + b",".join(batch) + b"]")
                batch, size = [], 2
            batch.append(event)
            size += len(event) + 1
        if batch:
            messages.append(b"[" + b",".join(batch) + b"]")
        return messages

    @abstractmethod
    async def _send(self, message: bytes) -> None:
        """Send one message to every worker."""

    async def _stop_tasks(self) -> None:
        """Stop sending and receiving."""
        for task in (self._sender, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def channel_for(url: str) -> str:
    """The NOTIFY channel of one database and schema (`search_path` option), so servers on
    different schemas of one database do not hear each other."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    key = f"{info.get('dbname', '')}|{info.get('options', '')}"
    return "carebase_telehealth_" + hashlib.sha256(key.encode()).hexdigest()[:12]


class PostgresBus(BatchingBus):
    """LISTEN/NOTIFY on the store's database; `spill`/`fetch` keep and read oversized events
    (the `telehealth_signal` table, through a thread: they are synchronous store calls)."""

    limit = NOTIFY_LIMIT

    def __init__(
        self, url: str, spill: Callable[[str], int], fetch: Callable[[int], str | None]
    ) -> None:
        super().__init__()
        self.url = url
        self.channel = channel_for(url)
        self.spill, self.fetch = spill, fetch
        self._listen: Any = None
        self._send_conn: Any = None

    async def start(self, handler: Handler) -> None:
        import psycopg

        await super().start(handler)
        try:
            self._listen = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            self._send_conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            await self._listen.execute(f"LISTEN {self.channel}")
        except psycopg.Error as exc:
            raise CarebaseError(f"The telehealth bus cannot LISTEN on PostgreSQL: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name="telehealth-pg-bus")
        self._start_sender()

    async def _run(self) -> None:
        async for notice in self._listen.notifies():
            payload: str = notice.payload
            if payload.startswith("@"):
                text = await asyncio.to_thread(self.fetch, int(payload[1:]))
                if text is None:
                    log.warning("telehealth event %s expired before it was read", payload)
                    continue
                payload = text
            await self._deliver_payload(payload)

    async def _send(self, message: bytes) -> None:
        payload = message.decode()
        if len(message) > NOTIFY_LIMIT:  # one event too large for NOTIFY
            payload = f"@{await asyncio.to_thread(self.spill, payload)}"
        await self._send_conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    async def close(self) -> None:
        await self._stop_tasks()
        for conn in (self._listen, self._send_conn):
            if conn is not None:
                await conn.close()


class RedisBus(BatchingBus):
    """Redis pub/sub on one channel."""

    def __init__(self, url: str, channel: str = "carebase_telehealth") -> None:
        super().__init__()
        self.url, self.channel = url, channel
        self._client: Any = None
        self._pubsub: Any = None

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
        self._start_sender()

    async def _run(self) -> None:
        async for message in self._pubsub.listen():
            if message.get("type") == "message":
                await self._deliver_payload(message["data"])

    async def _send(self, message: bytes) -> None:
        await self._client.publish(self.channel, message)

    async def close(self) -> None:
        await self._stop_tasks()
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()
