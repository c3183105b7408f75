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
from carebase.telehealth.notify import LoggingNotifier, Notifier, send_due_reminders
from carebase.telehealth.room_store import RoomStore
from carebase.telehealth.settings import TelehealthSettings
from carebase.telehealth.signalling import Hub

log = logging.getLogger("carebase.telehealth")


def make_bus(settings: TelehealthSettings, store: SqlStore, rooms: RoomStore) -> Bus:
    """The bus `settings.bus` names (auto: PostgreSQL's LISTEN/NOTIFY, or one process)."""
    kind = settings.bus
    if kind == "auto":
        kind = "postgres" if store.dialect == "postgresql" else "memory"
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
    ) -> None:
        self.settings = settings
        self.issuer = issuer
        self._ring = ring
        self._trail = trail
        self.notifier: Notifier = notifier or LoggingNotifier()
        self._hub: Hub | None = None
        self._tokens: JoinTokens | None = None
        self._reminders: asyncio.Task[None] | None = None
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
        """Connect the bus and start the hub and the reminder runner."""
        if not isinstance(store, SqlStore):
            raise TypeError("telehealth needs a SQL store")
        rooms = RoomStore(store, self.settings.max_participants)
        hub = Hub(
            store=store,
            rooms=rooms,
            bus=make_bus(self.settings, store, rooms),
            tokens=self.tokens,
            settings=self.settings,
            trail=self._trail,
        )
        await hub.start()
        self._hub = hub
        if self.settings.reminder_lead_minutes > 0:
            self._reminders = asyncio.create_task(self._remind(), name="telehealth-reminders")

    async def stop(self) -> None:
        if self._reminders is not None:
            self._reminders.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reminders
        if self._hub is not None:
            await self._hub.stop()
            self._hub = None

    async def _remind(self) -> None:
        lead = timedelta(minutes=self.settings.reminder_lead_minutes)
        while True:
            try:
                await run_in_threadpool(send_due_reminders, self.store, self.notifier, lead=lead)
            except CarebaseError as exc:
                log.warning("appointment reminders failed this round: %s", exc.message)
            await asyncio.sleep(self.settings.reminder_poll_seconds)
