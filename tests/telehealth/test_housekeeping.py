"""What telehealth does in the background and at startup: appointment reminders (again after
a reschedule; once from two app instances on PostgreSQL), the retention purge of visit rooms
and oversized signalling messages, and the refusal of the in-process bus with several
workers."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from telehealth_helpers import ADMIN, book_visit
from typer.testing import CliRunner

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.errors import CarebaseError
from carebase.store.base import Store
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore
from carebase.telehealth.codes import CHANGE_SYSTEM, REMINDER_SYSTEM
from carebase.telehealth.notify import (
    LoggingNotifier,
    send_change_notices,
    send_due_reminders,
)
from carebase.telehealth.room_store import RoomStore, now_ms
from carebase.telehealth.scheduling import body_of, cancel, free_slots, reschedule
from carebase.telehealth.service import bus_kind
from carebase.telehealth.settings import TelehealthSettings

DUE = timedelta(days=61)  # every booked test appointment starts within this


def _reminders(store: Store) -> list[str]:
    page = store.search("Communication", [("identifier", f"{REMINDER_SYSTEM}|")], count=50)
    ids = [
        i["value"]
        for e in page.entries
        for i in body_of(e)["identifier"]
        if i["system"] == REMINDER_SYSTEM
    ]
    return sorted(ids)


def _move_later(store: Store, appointment: dict[str, Any]) -> dict[str, Any]:
    """`appointment` rescheduled to the next free virtual slot after it."""
    later = free_slots(
        store,
        ADMIN,
        practitioner="Practitioner/doc",
        start=datetime.fromisoformat(appointment["end"].replace("Z", "+00:00")),
        end=datetime.now(UTC) + DUE,
        visit_type="virtual",
    )[0]
    return reschedule(store, ADMIN, appointment["id"], later["id"])


def test_a_rescheduled_appointment_is_reminded_again(store: Store) -> None:
    appointment = book_visit(store)
    notifier = LoggingNotifier()
    assert len(send_due_reminders(store, notifier, lead=DUE)) == 1
    assert send_due_reminders(store, notifier, lead=DUE) == []
    moved = _move_later(store, appointment)
    assert moved["start"] != appointment["start"]
    again = send_due_reminders(store, notifier, lead=DUE)
    assert [r.start for r in again] == [moved["start"]]  # the new time, once
    assert send_due_reminders(store, notifier, lead=DUE) == []
    assert [r.start for r in notifier.sent] == [appointment["start"], moved["start"]]


def test_a_reminded_patient_hears_at_once_of_a_move_or_a_cancellation(store: Store) -> None:
    appointment = book_visit(store)
    notifier = LoggingNotifier()
    assert send_change_notices(store, notifier, lead=DUE) == []  # nothing reminded yet
    assert len(send_due_reminders(store, notifier, lead=DUE)) == 1
    assert send_change_notices(store, notifier, lead=DUE) == []  # reminded, unchanged
    moved = _move_later(store, appointment)
    (notice,) = send_change_notices(store, notifier, lead=DUE)
    assert (notice.kind, notice.was, notice.start) == (
        "moved",
        appointment["start"],
        moved["start"],
    )
    assert f"at {appointment['start']} (UTC) is now at {moved['start']} (UTC)" in notice.text()
    assert notice.subject == "Appointment moved"
    assert send_change_notices(store, notifier, lead=DUE) == []  # once per change
    # the reminder for the new time goes out as before; once it has, nothing more to say
    assert [r.start for r in send_due_reminders(store, notifier, lead=DUE)] == [moved["start"]]
    assert send_change_notices(store, notifier, lead=DUE) == []
    cancel(store, ADMIN, appointment["id"], "clinician unwell")
    (cancelled,) = send_change_notices(store, notifier, lead=DUE)
    assert (cancelled.kind, cancelled.was) == ("cancelled", moved["start"])
    assert "is cancelled" in cancelled.text() and "unwell" not in cancelled.text()
    assert send_change_notices(store, notifier, lead=DUE) == []
    kept = store.search("Communication", [("identifier", f"{CHANGE_SYSTEM}|")], count=10)
    assert sorted(i["value"] for e in kept.entries for i in body_of(e)["identifier"]) == sorted(
        [
            f"{appointment['id']}-cancelled",
            f"{appointment['id']}-moved-" + "".join(c for c in moved["start"] if c.isalnum()),
        ]
    )
    assert [r.kind for r in notifier.sent] == ["reminder", "moved", "reminder", "cancelled"]


def _reminder_app(settings: Settings, store: Store, **changes: Any) -> Any:
    telehealth = TelehealthSettings(
        reminder_lead_minutes=int(DUE.total_seconds() // 60), reminder_poll_seconds=0.05
    )
    from dataclasses import replace

    return create_app(
        settings, store, audit=MemoryAuditTrail(), telehealth=replace(telehealth, **changes)
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_two_app_instances_send_a_due_reminder_once(
    store: Store, settings: Settings, postgres_url: str
) -> None:
    appointment = book_visit(store)
    other = open_store(postgres_url, Settings(pool_size=2))
    try:
        apps = [_reminder_app(settings, store), _reminder_app(settings, other)]
        async with (
            apps[0].router.lifespan_context(apps[0]),
            apps[1].router.lifespan_context(apps[1]),
        ):
            notifiers = [app.state.telehealth.notifier for app in apps]
            for _ in range(400):
                if any(n.sent for n in notifiers):
                    break
                await asyncio.sleep(0.025)
            await asyncio.sleep(0.5)  # ten more rounds in each app
            sent = [r for n in notifiers for r in n.sent]
    finally:
        other.close()
    assert [r.appointment for r in sent] == [f"Appointment/{appointment['id']}"]
    assert len(_reminders(store)) == 1


def test_expired_rooms_and_signalling_messages_are_purged(store: Store) -> None:
    assert isinstance(store, SqlStore)
    rooms = RoomStore(store, signal_retention_seconds=60)
    for room in ("old", "new"):
        rooms.change(room, lambda r: None)
    stale, fresh = rooms.put_signal("x" * 9000), rooms.put_signal("y")
    with store.writing() as cur:
        cur.execute(
            store.q("UPDATE telehealth_room SET updated = ? WHERE id = 'old'"),
            (now_ms() - 7200_000,),
        )
        cur.execute(
            store.q("UPDATE telehealth_signal SET created = ? WHERE id = ?"),
            (now_ms() - 61_000, stale),
        )
    assert rooms.purge(3600) == (1, 1)
    assert rooms.load("old") is None and rooms.load("new") is not None
    assert rooms.get_signal(stale) is None and rooms.get_signal(fresh) == "y"
    assert rooms.purge(3600) == (0, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_the_app_purges_expired_rooms(store: Store, settings: Settings) -> None:
    assert isinstance(store, SqlStore)
    rooms = RoomStore(store)
    rooms.change("gone", lambda r: None)
    rooms.change("kept", lambda r: None)
    with store.writing() as cur:
        cur.execute(
            store.q("UPDATE telehealth_room SET updated = ? WHERE id = 'gone'"),
            (now_ms() - 3 * 3600_000,),
        )
    app = _reminder_app(settings, store, reminder_lead_minutes=0, room_retention_seconds=2 * 3600)
    async with app.router.lifespan_context(app):
        for _ in range(200):
            if rooms.load("gone") is None:
                break
            await asyncio.sleep(0.025)
    assert rooms.load("gone") is None and rooms.load("kept") is not None


def test_retention_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREBASE_TELEHEALTH_ROOM_RETENTION_SECONDS", "86400")
    monkeypatch.setenv("CAREBASE_TELEHEALTH_SIGNAL_RETENTION_SECONDS", "120")
    got = TelehealthSettings.from_env()
    assert (got.room_retention_seconds, got.signal_retention_seconds) == (86400, 120)
    monkeypatch.setenv("CAREBASE_TELEHEALTH_ROOM_RETENTION_SECONDS", "60")
    with pytest.raises(CarebaseError, match="at least 3600"):
        TelehealthSettings.from_env()


def test_the_in_process_bus_is_refused_with_several_workers() -> None:
    memory = TelehealthSettings(bus="memory")
    assert bus_kind(memory, "postgresql", 1) == "memory"
    assert bus_kind(TelehealthSettings(), "postgresql", 4) == "postgres"
    assert bus_kind(TelehealthSettings(), "sqlite", 1) == "memory"
    with pytest.raises(CarebaseError, match="3 workers"):
        bus_kind(memory, "postgresql", 3)
    with pytest.raises(CarebaseError, match="never hear each other"):
        bus_kind(TelehealthSettings(), "sqlite", 2)


@pytest.mark.asyncio
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_an_app_of_several_workers_refuses_the_in_process_bus(
    store: Store, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    two = settings.with_(workers=2)
    app = _reminder_app(two, store, reminder_lead_minutes=0, bus="memory")
    with pytest.raises(CarebaseError, match="CAREBASE_TELEHEALTH_BUS=memory"):
        async with app.router.lifespan_context(app):
            pass
    caplog.set_level(logging.INFO, logger="carebase.telehealth")
    app = _reminder_app(two, store, reminder_lead_minutes=0)
    async with app.router.lifespan_context(app):
        pass
    assert "telehealth signalling bus: PostgresBus (postgresql, 2 workers)" in caplog.text


def test_serve_refuses_the_in_process_bus_with_several_workers(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, tmp_path: Any
) -> None:
    from carebase.cli import serve
    from carebase.cli.main import app

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server must not start")

    monkeypatch.setattr(serve.uvicorn, "run", never)
    monkeypatch.setenv("CAREBASE_TELEHEALTH_BUS", "memory")
    monkeypatch.setenv("CAREBASE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--workers", "2", "--database", postgres_url])
    assert result.exit_code == 2, result.output
    assert "never hear each other" in " ".join(result.output.split())
