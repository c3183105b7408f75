"""Fixtures for the telehealth tests: a real server (uvicorn on a free port, in a thread)
over the test store, a booked virtual visit, and bearer tokens for its participants."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from telehealth_helpers import book_visit

from carebase.api.app import create_app
from carebase.auth.audit_entry import AuditEntry, MemoryAuditTrail
from carebase.config import Settings
from carebase.store.base import Store
from carebase.telehealth.settings import TelehealthSettings


class LockedTrail(MemoryAuditTrail):
    """The in-memory trail, safe to record from the server thread and the thread pool."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def record(self, entry: AuditEntry) -> None:
        with self._lock:
            self.entries.append(entry)

    def interactions(self) -> list[str]:
        with self._lock:
            return [e.interaction for e in self.entries]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a background thread."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class Visit:
    """A booked virtual appointment on a live server, and its people's bearer tokens."""

    server: LiveServer
    app: Starlette
    audit: LockedTrail
    store: Store
    appointment: dict[str, Any]
    bearers: dict[str, str] = field(default_factory=dict)

    @property
    def room(self) -> str:
        return str(self.appointment["id"])

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearers[who]}"}

    def join_grant(self, who: str) -> dict[str, Any]:
        r = httpx.post(
            f"{self.server.http}/telehealth/api/appointments/{self.room}/join",
            headers=self.headers(who),
        )
        assert r.status_code == 200, r.text
        grant: dict[str, Any] = r.json()
        return grant


def _patient_token(issue: Any, patient: str, name: str) -> str:
    token: str = issue(
        subject=f"u-{patient}",
        scopes=["patient/*.rs"],
        role="patient",
        username=name,
        patient=patient,
        fhir_user=f"Patient/{patient}",
    )[0]
    return token


def bearers(app: Starlette) -> dict[str, str]:
    tokens = app.state.tokens
    issue = tokens.issue
    return {
        "clinician": issue(
            subject="u-doc",
            scopes=["user/*.cruds"],
            role="clinician",
            username="Dr Who",
            fhir_user="Practitioner/doc",
        )[0],
        "patient": _patient_token(issue, "pat1", "Pat One"),
        "other-patient": _patient_token(issue, "pat2", "Pat Two"),
        "front-desk": issue(
            subject="u-desk",
            scopes=[
                "user/Appointment.cruds",
                "user/Slot.rs",
                "user/Schedule.rs",
                "user/Patient.rs",
            ],
            role="front-desk",
        )[0],
    }


def telehealth_settings(**changes: Any) -> TelehealthSettings:
    base = TelehealthSettings(reminder_lead_minutes=0, ping_seconds=30.0, resume_seconds=30.0)
    from dataclasses import replace

    return replace(base, **changes)


@pytest.fixture
def visit_factory(store: Store, settings: Settings) -> Iterator[Any]:
    """visit_factory(**telehealth settings) -> a running Visit (stopped after the test)."""
    running: list[LiveServer] = []

    def make(**changes: Any) -> Visit:
        audit = LockedTrail()
        app = create_app(settings, store, audit=audit, telehealth=telehealth_settings(**changes))
        appointment = book_visit(store)
        server = LiveServer(app).__enter__()
        running.append(server)
        return Visit(server, app, audit, store, appointment, bearers(app))

    yield make
    for server in running:
        server.__exit__()


@pytest.fixture
def visit(visit_factory: Any) -> Visit:
    result: Visit = visit_factory()
    return result
