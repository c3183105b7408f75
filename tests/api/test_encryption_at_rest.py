"""Encryption at rest through the HTTP API on SQLite and PostgreSQL: sealed rows, reads,
history, search with includes, mixed plaintext rows, wrong keys and swapped ciphertext."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from api_helpers import FHIR_JSON, bearer, create, observation, patient
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.errors import StorageError
from carebase.store.base import Store
from carebase.store.body_cipher import MAGIC, BodyCipher, key_id, new_key
from carebase.store.sql_store import SqlStore

pytestmark = pytest.mark.asyncio
KEY = new_key()


@pytest.fixture
def sealed_store(store: Store) -> Iterator[SqlStore]:
    """The test store sealing bodies with KEY (the PostgreSQL store is shared: restored)."""
    assert isinstance(store, SqlStore)
    store.cipher = BodyCipher([KEY])
    yield store
    store.cipher = None


@pytest_asyncio.fixture
async def client(sealed_store: SqlStore, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: Starlette = create_app(settings, sealed_store, audit=MemoryAuditTrail())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as c:
        yield c


def raw_bodies(store: SqlStore, table: str = "resource") -> dict[tuple[str, str, int], bytes]:
    """(type, id, version) -> the stored bytes of every non-null body of `table`."""
    with store.reading() as cur:
        rows = cur.execute(
            f"SELECT type, id, version, body FROM {table} WHERE body IS NOT NULL"
        ).fetchall()
    return {(t, i, v): bytes(b) for t, i, v, b in rows}


def set_body(store: SqlStore, table: str, type_: str, id_: str, version: int, body: bytes) -> None:
    with store.writing() as cur:
        cur.execute(
            store.q(f"UPDATE {table} SET body = ? WHERE type = ? AND id = ? AND version = ?"),
            (body, type_, id_, version),
        )


async def test_bodies_are_sealed_and_read_back(
    client: httpx.AsyncClient, sealed_store: SqlStore
) -> None:
    made = await create(client, patient("Sealed"))
    pid = made["id"]
    stored = raw_bodies(sealed_store)[("Patient", pid, 1)]
    assert stored.startswith(MAGIC + key_id(KEY).encode())
    assert b"Sealed" not in stored
    read = await client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200 and read.json() == made

    updated = await client.put(
        f"/fhir/Patient/{pid}", json={**patient("Resealed"), "id": pid}, headers=FHIR_JSON
    )
    assert updated.status_code == 200, updated.text
    versions = raw_bodies(sealed_store, "resource_version")
    assert versions[("Patient", pid, 1)] == stored  # the archived version keeps its bytes
    assert b"Resealed" not in raw_bodies(sealed_store)[("Patient", pid, 2)]
    old = await client.get(f"/fhir/Patient/{pid}/_history/1")
    assert old.json()["name"][0]["family"] == "Sealed"
    history = (await client.get(f"/fhir/Patient/{pid}/_history")).json()
    families = [e["resource"]["name"][0]["family"] for e in history["entry"]]
    assert families == ["Resealed", "Sealed"]
    system = (await client.get("/fhir/_history")).json()
    assert len(system["entry"]) == 2


async def test_search_and_includes_on_sealed_bodies(
    client: httpx.AsyncClient, sealed_store: SqlStore
) -> None:
    p = await create(client, patient("Indexed"))
    obs = await create(client, observation(f"Patient/{p['id']}"))
    page = (await client.get("/fhir/Patient", params={"family": "Indexed"})).json()
    assert [e["resource"] for e in page["entry"]] == [p]  # the index stays plaintext
    page = (
        await client.get(
            "/fhir/Observation",
            params={"subject": f"Patient/{p['id']}", "_include": "Observation:subject"},
        )
    ).json()
    assert [e["resource"] for e in page["entry"]] == [obs, p]
    sorted_page = (await client.get("/fhir/Patient", params={"_sort": "family"})).json()
    assert sorted_page["entry"][0]["resource"] == p
    everything = list(sealed_store.iter_current())
    assert {s.id for s in everything} == {p["id"], obs["id"]}
    assert all(s.body is not None and s.body.startswith(b"{") for s in everything)


async def test_transaction_bundles_are_sealed(
    client: httpx.AsyncClient, sealed_store: SqlStore
) -> None:
    # Many entries: PostgreSQL writes them with COPY.
    entries = [
        {"resource": patient(f"Bulk{i}"), "request": {"method": "POST", "url": "Patient"}}
        for i in range(30)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    bodies = raw_bodies(sealed_store)
    assert len(bodies) == 30 and all(b.startswith(MAGIC) for b in bodies.values())
    page = (await client.get("/fhir/Patient", params={"family": "Bulk7"})).json()
    assert page["entry"][0]["resource"]["name"][0]["family"] == "Bulk7"


async def test_plaintext_rows_from_before_still_read(
    client: httpx.AsyncClient, sealed_store: SqlStore
) -> None:
    sealed_store.cipher = None
    plain = await create(client, patient("Plain"))  # written before encryption was on
    sealed_store.cipher = BodyCipher([KEY])
    sealed = await create(client, patient("Sealed"))
    bodies = raw_bodies(sealed_store)
    assert bodies[("Patient", plain["id"], 1)].startswith(b"{")
    assert bodies[("Patient", sealed["id"], 1)].startswith(MAGIC)
    assert (await client.get(f"/fhir/Patient/{plain['id']}")).json() == plain
    page = (await client.get("/fhir/Patient", params={"_sort": "family"})).json()
    assert [e["resource"] for e in page["entry"]] == [plain, sealed]
    # Updating a plaintext resource seals its new version; the old one stays as it was.
    r = await client.put(f"/fhir/Patient/{plain['id']}", json={**patient("Now"), "id": plain["id"]})
    assert r.status_code == 200
    assert raw_bodies(sealed_store)[("Patient", plain["id"], 2)].startswith(MAGIC)
    old = await client.get(f"/fhir/Patient/{plain['id']}/_history/1")
    assert old.json() == plain


async def test_wrong_or_missing_key_is_a_clear_error(
    client: httpx.AsyncClient, sealed_store: SqlStore
) -> None:
    made = await create(client, patient())
    sealed_store.cipher = BodyCipher([new_key()])
    with pytest.raises(StorageError, match=f"encrypted with key {key_id(KEY)}"):
        sealed_store.read("Patient", made["id"])
    r = await client.get(f"/fhir/Patient/{made['id']}")
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "Chalmers" not in r.text
    sealed_store.cipher = None
    with pytest.raises(StorageError, match="no encryption key is configured"):
        sealed_store.read("Patient", made["id"])
    with pytest.raises(StorageError, match="no encryption key is configured"):
        sealed_store.search("Patient", [])


async def test_ciphertext_moved_between_rows_is_refused(
    client: httpx.AsyncClient, sealed_store: SqlStore
) -> None:
    a = await create(client, patient("Alice"))
    b = await create(client, patient("Bob"))
    await client.put(f"/fhir/Patient/{a['id']}", json={**patient("Alice2"), "id": a["id"]})
    bodies = raw_bodies(sealed_store)
    # Another patient's body pasted into A's current row, and A's version 2 into version 1.
    set_body(sealed_store, "resource", "Patient", a["id"], 2, bodies[("Patient", b["id"], 1)])
    set_body(
        sealed_store, "resource_version", "Patient", a["id"], 1, bodies[("Patient", a["id"], 2)]
    )
    with pytest.raises(StorageError, match="failed authentication"):
        sealed_store.read("Patient", a["id"])
    with pytest.raises(StorageError, match="failed authentication"):
        sealed_store.vread("Patient", a["id"], 1)
    r = await client.get(f"/fhir/Patient/{a['id']}")
    assert r.status_code == 500 and "Bob" not in r.text
    assert (await client.get(f"/fhir/Patient/{b['id']}")).json() == b
