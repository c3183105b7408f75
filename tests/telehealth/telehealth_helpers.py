"""Shared pieces of the telehealth tests: a practitioner, a patient and published slots."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from carebase.auth.principal import DEVELOPMENT_PRINCIPAL, Principal
from carebase.store.base import Store
from carebase.telehealth.access import Caller
from carebase.telehealth.availability import parse_pattern
from carebase.telehealth.scheduling import Published, publish

ADMIN = Caller(DEVELOPMENT_PRINCIPAL)


def clinician(practitioner: str = "Practitioner/doc") -> Caller:
    return Caller(
        Principal(
            subject="u-doc",
            role="clinician",
            fhir_user=practitioner,
            scopes=frozenset({"user/*.cruds"}),
        )
    )


def patient_caller(patient_id: str) -> Caller:
    return Caller(
        Principal(
            subject=f"u-{patient_id}",
            role="patient",
            patient=patient_id,
            fhir_user=f"Patient/{patient_id}",
            scopes=frozenset({"patient/*.rs", "patient/Communication.c"}),
        )
    )


def seed(store: Store, patients: tuple[str, ...] = ("pat1", "pat2")) -> None:
    """Practitioner/doc and the given Patients."""
    with store.transaction() as tx:
        tx.create(
            "Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Who"}]}, "doc"
        )
        for pid in patients:
            tx.create(
                "Patient",
                {
                    "resourceType": "Patient",
                    "name": [{"family": pid}],
                    "telecom": [{"system": "email", "value": f"{pid}@example.org"}],
                },
                pid,
            )


def week_ahead() -> date:
    """A Monday at least a week from today."""
    day = datetime.now(UTC).date() + timedelta(days=7)
    return day + timedelta(days=(7 - day.weekday()) % 7)


def pattern(**changes: Any) -> dict[str, Any]:
    monday = week_ahead()
    body: dict[str, Any] = {
        "practitioner": "Practitioner/doc",
        "timezone": "Europe/Berlin",
        "from": monday.isoformat(),
        "to": (monday + timedelta(days=6)).isoformat(),
        "slotMinutes": 30,
        "visitTypes": ["virtual", "in-person"],
        "weekly": {"mon": [["09:00", "11:00"]], "wed": [["14:00", "15:00"]]},
    }
    body.update(changes)
    return body


def published(store: Store, **changes: Any) -> Published:
    return publish(store, ADMIN, parse_pattern(pattern(**changes)))


def book_visit(store: Store) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from carebase.telehealth.scheduling import book, free_slots

    seed(store)
    published(store)
    slot = free_slots(
        store,
        ADMIN,
        practitioner="Practitioner/doc",
        start=datetime.now(UTC),
        end=datetime.now(UTC) + timedelta(days=60),
        visit_type="virtual",
    )[0]
    return book(store, ADMIN, slot_id=slot["id"], patient_id="pat1", visit_type="virtual")


class Peer:
    """A signalling client over a real WebSocket (the `websockets` package)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, token: str | None = None) -> Peer:
        from websockets.asyncio.client import connect

        peer = cls(await connect(url, max_size=None))
        if token is not None:
            await peer.send({"type": "join", "token": token})
        return peer

    async def send(self, frame: dict[str, Any]) -> None:
        import orjson

        await self.ws.send(orjson.dumps(frame).decode())

    async def expect(self, type_: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next frame of `type_` (with the given field values), skipping others."""
        import asyncio

        import orjson

        async def wait() -> dict[str, Any]:
            while True:
                frame: dict[str, Any] = orjson.loads(await self.ws.recv())
                self.seen.append(frame)
                if frame.get("type") == type_ and all(frame.get(k) == v for k, v in match.items()):
                    return frame

        return await asyncio.wait_for(wait(), timeout)

    async def room_where(self, check: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The next `room` frame whose room satisfies `check`."""
        import asyncio

        async def wait() -> dict[str, Any]:
            while True:
                frame = await self.expect("room", timeout)
                if check(frame["room"]):
                    return frame

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.ws.close()


def state_of(room: dict[str, Any], pid: str) -> str | None:
    """A participant's state in a room view."""
    for p in room["participants"]:
        if p["id"] == pid:
            return str(p["state"])
    return None


def ws_url(visit: Any) -> str:
    """The signalling WebSocket of the test visit's room."""
    return f"{visit.server.ws}/telehealth/ws/{visit.room}"


def invite(visit: Any, name: str, kind: str) -> dict[str, Any]:
    """The clinician invites a guest or interpreter: its join grant."""
    r = httpx.post(
        f"{visit.server.http}/telehealth/api/appointments/{visit.room}/invite",
        json={"name": name, "kind": kind},
        headers=visit.headers("clinician"),
    )
    assert r.status_code == 200, r.text
    grant: dict[str, Any] = r.json()
    return grant


async def join_admitted(visit: Any, doc: Peer, grant: dict[str, Any]) -> Peer:
    """`grant`'s holder joins, waits, and is admitted by the clinician `doc`."""
    peer = await Peer.open(ws_url(visit), grant["token"])
    assert (await peer.expect("joined"))["state"] == "waiting"
    pid = grant["participant"]
    await doc.room_where(lambda room: state_of(room, pid) == "waiting")
    await doc.send({"type": "admit", "participant": pid})
    await peer.room_where(lambda room: state_of(room, pid) == "admitted")
    return peer
