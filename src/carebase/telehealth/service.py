"""The telehealth service of one server process: its bus, hub, join tokens and reminder
runner, started and stopped with the app (`api.app` calls `start`/`stop` in its lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from starlette.concurrency import run_in_threadpool

from carebase.auth.audit_entry import AuditTrail
from carebase.auth.keys import KeyRing
from carebase.errors import CarebaseError
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore
from carebase.telehealth.bus import Bus, MemoryBus, PostgresBus, RedisBus
from carebase.telehealth.join_tokens import JoinTokens
from carebase.telehealth.notify import (
    LoggingNotifier,
    Notifier,
    send_change_notices,
    send_due_reminders,
)
from carebase.telehealth.room_store import RoomStore
from carebase.telehealth.settings import TelehealthSettings
from carebase.telehealth.signalling import Hub

log = logging.getLogger("carebase.telehealth")


def bus_kind(settings: TelehealthSettings, dialect: str, workers: int = 1) -> str:
    """The bus `settings.bus` names (auto: PostgreSQL's LISTEN/NOTIFY, or one process).

    Refuses (CarebaseError) the in-process bus with several workers: participants of one
    visit connected to different workers would never hear each other."""
    kind = settings.bus
    if kind == "auto":
        kind = "postgres" if dialect == "postgresql" else "memory"
    if kind == "memory" and workers > 1:
        raise CarebaseError(
            f"CAREBASE_TELEHEALTH_BUS=memory keeps visit signalling inside one process, but "
            f"the server runs {workers} workers: participants on different workers would "
            "never hear each other. Use CAREBASE_TELEHEALTH_BUS=postgres (or auto) or redis, "
            "or run one worker."
        )
    return kind


def make_bus(
    settings: TelehealthSettings, store: SqlStore, rooms: RoomStore, workers: int = 1
) -> Bus:
    """The bus for this worker (see `bus_kind`)."""
    kind = bus_kind(settings, store.dialect, workers)
    if kind == "postgres":
        if store.dialect != "postgresql":
            raise CarebaseError("CAREBASE_TELEHEALTH_BUS=postgres needs a PostgreSQL database")
        return PostgresBus(store.url, rooms.put_signal, rooms.get_signal)
    if kind == "redis":
        return RedisBus(settings.redis_url)
    return MemoryBus()


class Telehealth:
    """Everything telehealth runs in one worker."""

    def __init__(
        self,
        settings: TelehealthSettings,
        *,
        issuer: str,
        store: Callable[[], Store],
        ring: Callable[[], KeyRing],
        trail: Callable[[], AuditTrail | None],
        notifier: Notifier | None = None,
        workers: int = 1,
    ) -> None:
        self.settings = settings
        #: how many server processes serve this app (CAREBASE_WORKERS)
        self.workers = workers
        self.issuer = issuer
        self._ring = ring
        self._trail = trail
        self.notifier: Notifier = notifier or LoggingNotifier()
        self._hub: Hub | None = None
        self._tokens: JoinTokens | None = None
        self._reminders: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._store = store

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("telehealth is not started (the app lifespan starts it)")
        return self._hub

    @property
    def tokens(self) -> JoinTokens:
        if self._tokens is None:
            self._tokens = JoinTokens(self._ring(), self.issuer, self.settings.join_token_ttl)
        return self._tokens

    @property
    def store(self) -> Store:
        """The app's store (scheduling and messages work before `start` too)."""
        return self._store()

    async def start(self, store: Store) -> None:
        """Connect the bus and start the hub, the reminder runner and the purger."""
        if not isinstance(store, SqlStore):
            raise TypeError("telehealth needs a SQL store")
        rooms = RoomStore(
            store, self.settings.max_participants, self.settings.signal_retention_seconds
        )
        bus = make_bus(self.settings, store, rooms, self.workers)
        log.info(
            "telehealth signalling bus: %s (%s, %d worker%s)",
            type(bus).__name__,
            store.dialect,
            self.workers,
            "" if self.workers == 1 else "s",
        )
        hub = Hub(
            store=store,
            rooms=rooms,
            bus=bus,
            tokens=self.tokens,
            settings=self.settings,
            trail=self._trail,
        )
        await hub.start()
        self._hub = hub
        if self.settings.reminder_lead_minutes > 0:
            self._reminders = asyncio.create_task(self._remind(), name="telehealth-reminders")
        self._purger = asyncio.create_task(self._purge(rooms), name="telehealth-purge")

    async def stop(self) -> None:
        for task in (self._reminders, self._purger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reminders = self._purger = None
        if self._hub is not None:
            await self._hub.stop()
            self._hub = None

    async def _remind(self) -> None:
        lead = timedelta(minutes=self.settings.reminder_lead_minutes)
        while True:
            try:
                await run_in_threadpool(send_due_reminders, self.store, self.notifier, lead=lead)
                await run_in_threadpool(send_change_notices, self.store, self.notifier, lead=lead)
            except CarebaseError as exc:
                log.warning("appointment reminders failed this round: %s", exc.message)
            await asyncio.sleep(self.settings.reminder_poll_seconds)

    async def _purge(self, rooms: RoomStore) -> None:
        """Delete expired visit rooms and signalling messages, now and every `purge_seconds`."""
        while True:
            try:
                removed = await run_in_threadpool(rooms.purge, self.settings.room_retention_seconds)
                if any(removed):
                    log.info("telehealth purge: %d rooms, %d signalling messages", *removed)
            except Exception:  # the database is away: try again next round
                log.exception("telehealth purge failed this round")
            await asyncio.sleep(self.settings.purge_seconds)
