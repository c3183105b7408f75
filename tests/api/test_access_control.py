"""Attack suite, part 1: authentication, and patient A's token reaching patient B's data by
read, vread, search, compartment search, `_include`/`_revinclude`, chains, `_has` and history.

Every refusal must fail closed (401/403/404 or an empty result) and leave an audit entry.
Runs on SQLite and PostgreSQL (the `store` fixture).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
import pytest_asyncio
from access_world import World, build_world, history_ids, ids
from api_helpers import issue_text
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette

from carebase.api.authentication import _token_of
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.auth.tokens import TokenService
from carebase.errors import Unauthorized

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def world(client: httpx.AsyncClient, app: Starlette, audit: MemoryAuditTrail) -> World:
    built = await build_world(client, app)
    audit.entries.clear()
    return built


# --- authentication ---------------------------------------------------------------------------


async def test_no_token_is_401_with_a_bare_challenge(
    client: httpx.AsyncClient, audit: MemoryAuditTrail
) -> None:
    r = await client.get("/fhir/Patient", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="carebase"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"  # hardening wraps refusals too
    assert issue_text(r).startswith("This endpoint needs an access token")
    entry = audit.entries[-1]
    assert (entry.interaction, entry.outcome, entry.principal) == ("failed-auth", "4", None)


async def test_metadata_needs_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/metadata", headers={"Authorization": ""})
    assert r.status_code == 200
    # a public prefix does not open the FHIR routes behind it (deny by default)
    for path in ("/fhir/.well-known/A/Patient", "/fhir/.well-known/Patient/A/_history"):
        r = await client.get(path, headers={"Authorization": ""})
        assert r.status_code in (401, 404), path
        assert b'resourceType":"Patient' not in r.content


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _forge(tokens: TokenService, **change: object) -> str:
    token, claims = tokens.issue(subject="x", scopes=["system/*.cruds"], kind="service")
    header, _payload, signature = token.split(".")
    claims.update(change)
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize(
    "case", ["expired", "not-yet-valid", "audience", "issuer", "tampered", "none", "hmac"]
)
async def test_bad_tokens_are_401_invalid_token(
    client: httpx.AsyncClient, tokens: TokenService, audit: MemoryAuditTrail, case: str
) -> None:
    if case == "expired":
        token, _ = tokens.issue(subject="x", scopes=["system/*.cruds"], ttl=-120)
    elif case == "not-yet-valid":  # signed by the server's own key, valid only later
        key = tokens.ring.active
        _, claims = tokens.issue(subject="x", scopes=["system/*.cruds"], kind="service")
        claims.update(nbf=int(time.time()) + 600, exp=int(time.time()) + 900)
        token = jwt.encode(
            claims, key.private, algorithm="RS256", headers={"kid": key.kid, "typ": "at+jwt"}
        )
    elif case in ("audience", "issuer"):
        other = TokenService(
            tokens.ring,
            issuer="http://evil" if case == "issuer" else tokens.issuer,
            audience="http://evil/fhir" if case == "audience" else tokens.audience,
        )
        token, _ = other.issue(subject="x", scopes=["system/*.cruds"])
    elif case == "tampered":
        token = _forge(tokens, scope="system/*.cruds user/*.cruds", sub="someone-else")
    elif case == "none":
        claims = {"sub": "x", "scope": "system/*.cruds", "exp": int(time.time()) + 60}
        token = jwt.encode(claims, None, algorithm="none")
    else:  # HMAC signed with the server's public key as the secret (key confusion)
        key = tokens.ring.active
        pem = key.public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        _, claims = tokens.issue(subject="x", scopes=["system/*.cruds"], kind="service")
        head = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
        signing = b".".join(_b64(json.dumps(part).encode()) for part in (head, claims))
        mac = hmac.new(pem, signing, hashlib.sha256).digest()
        token = (signing + b"." + _b64(mac)).decode()
    r = await client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert audit.entries[-1].interaction == "failed-auth"
    assert audit.entries[-1].outcome == "4"


async def test_malformed_authorization_header_is_401(client: httpx.AsyncClient) -> None:
    for value in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "bearer '; DROP TABLE resource;--"):
        r = await client.get("/fhir/Patient", headers={"Authorization": value})
        assert r.status_code == 401, value
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


async def test_bearer_header_forms_read_alike() -> None:
    # "Bearer <token>" takes a short path; it must read every header as the long one does
    for header, token in [("Bearer abc", "abc"), ("Bearer  abc", "abc"), ("Bearer abc ", "abc"),
                          ("  bearer abc", "abc"), ("BEARER abc", "abc")]:  # fmt: skip
        assert _token_of(header) == token, header
    for bad in (None, "", "Bearer ", "Bearer \t", "Basic abc", "Bearer\tabc", "Bearerabc"):
        with pytest.raises(Unauthorized):
            _token_of(bad)


async def test_scope_escalation_is_cut_to_the_role_ceiling(world: World) -> None:
    # a patient's token claiming user/*.cruds holds nothing: patients never get user/ scopes
    escalated = world.token(("user/*.cruds",), role="patient", kind="user", patient="A")
    async with _as(world, escalated) as c:
        r = await c.get("/fhir/Observation")
    assert r.status_code == 403


async def test_insufficient_scope_is_403_naming_it(world: World, audit: MemoryAuditTrail) -> None:
    only_obs = world.token(("patient/Observation.rs",), role="patient", kind="user", patient="A")
    async with _as(world, only_obs) as c:
        r = await c.get("/fhir/Patient/A")
        assert r.status_code == 403
        assert "patient/Patient.r" in issue_text(r)
        s = await c.get("/fhir/Condition")
        assert s.status_code == 403 and "patient/Condition.s" in issue_text(s)
    denied = [e for e in audit.entries if e.outcome == "4"]
    assert [e.interaction for e in denied] == ["read", "search-type"]
    assert denied[0].entities == ("Patient/A",)


async def test_patient_scopes_need_a_patient_in_context(world: World) -> None:
    no_patient = world.token(("patient/*.rs",), role="patient", kind="user")
    async with _as(world, no_patient) as c:
        r = await c.get("/fhir/Observation")
    assert r.status_code == 403 and "launch context" in issue_text(r)


# --- reads ------------------------------------------------------------------------------------


def _as(world: World, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app), base_url="http://testserver", headers=headers
    )


async def test_other_patients_resources_are_404_like_missing_ones(
    world: World, audit: MemoryAuditTrail
) -> None:
    async with _as(world, world.patient_a) as c:
        assert (await c.get("/fhir/Patient/A")).status_code == 200
        assert (await c.get("/fhir/Observation/obs-a-lab")).status_code == 200
        assert (await c.get("/fhir/Practitioner/doc")).status_code == 200  # no compartment
        for path in (
            "Patient/B",
            "Observation/obs-b-lab",
            "Observation/obs-b-focus",  # refers to A, but through no compartment parameter
            "Patient/B/_history/1",
            "Observation/obs-b-lab/_history/1",
            "Patient/B/_history",
        ):
            hidden = await c.get(f"/fhir/{path}")
            missing = await c.get(f"/fhir/{path.replace('B', 'Z').replace('obs-b', 'obs-z')}")
            assert hidden.status_code == missing.status_code == 404, path
            text = issue_text(hidden)
            assert text == issue_text(missing).replace("Z", "B").replace("obs-z", "obs-b")
    refused = [e for e in audit.entries if e.outcome == "4"]
    assert len(refused) == 12
    assert refused[0].entities == ("Patient/B",) and refused[0].principal is not None
    assert refused[0].principal.patient == "A"
    ok = audit.entries[0]
    assert (ok.interaction, ok.action, ok.outcome, ok.patients) == ("read", "R", "0", ("A",))


async def test_search_returns_only_the_patients_own(world: World) -> None:
    async with _as(world, world.patient_a) as c:
        everything = (await c.get("/fhir/Observation")).json()
        assert ids(everything) == [
            "Observation/obs-a-focus",
            "Observation/obs-a-lab",
            "Observation/obs-a-vital",
        ]
        assert everything["total"] == 3
        aimed = (await c.get("/fhir/Observation", params={"subject": "Patient/B"})).json()
        assert aimed["total"] == 0 and ids(aimed) == []
        patients = (await c.get("/fhir/Patient")).json()
        assert ids(patients) == ["Patient/A"]
        paged = (await c.get("/fhir/Observation", params={"_count": "2"})).json()
        assert paged["total"] == 3 and len(ids(paged)) == 2
        post = await c.post(
            "/fhir/Observation/_search",
            data={"code": "1111-1"},
        )
        assert ids(post.json()) == ["Observation/obs-a-lab"]
        system = (await c.get("/fhir", params={"_type": "Patient,Observation"})).json()
        assert "Patient/B" not in ids(system) and "Observation/obs-b-lab" not in ids(system)
        assert (await c.get("/fhir", params={"_id": "B"})).json().get("total") == 0


async def test_compartment_search_of_another_patient_is_empty(world: World) -> None:
    async with _as(world, world.patient_a) as c:
        own = (await c.get("/fhir/Patient/A/Observation")).json()
        assert len(ids(own)) == 3
        for path in ("/fhir/Patient/B/Observation", "/fhir/Patient/B/*"):
            bundle = (await c.get(path)).json()
            assert ids(bundle) == [] and bundle["total"] == 0


async def test_includes_never_bring_other_patients_data(world: World) -> None:
    async with _as(world, world.patient_a) as c:
        inc = (
            await c.get(
                "/fhir/Observation", params={"_id": "obs-a-focus", "_include": "Observation:*"}
            )
        ).json()
        assert ids(inc) == ["Observation/obs-a-focus"]
        assert ids(inc, "include") == ["Patient/A"]  # its subject; not B (its focus)
        forward = (
            await c.get(
                "/fhir/Observation", params={"_id": "obs-a-focus", "_include": "Observation:focus"}
            )
        ).json()
        assert ids(forward) == ["Observation/obs-a-focus"] and ids(forward, "include") == []
        rev = (await c.get("/fhir/Patient", params={"_revinclude": "Observation:focus"})).json()
        assert ids(rev) == ["Patient/A"] and ids(rev, "include") == []  # obs-b-focus hidden
        subject = (
            await c.get("/fhir/Patient", params={"_revinclude": "Observation:subject"})
        ).json()
        assert len(ids(subject, "include")) == 3


async def test_include_of_an_unscoped_type_is_403(world: World) -> None:
    obs_only = world.token(("patient/Observation.rs",), role="patient", kind="user", patient="A")
    async with _as(world, obs_only) as c:
        r = await c.get("/fhir/Observation", params={"_include": "Observation:subject:Patient"})
        assert r.status_code == 403
        r = await c.get("/fhir/Observation", params={"_include": "Observation:subject"})
        assert r.status_code == 200 and ids(r.json(), "include") == []  # dropped


async def test_chains_and_has_see_only_visible_resources(world: World, admin_token: str) -> None:
    queries = [
        ("Observation", {"subject:Patient.name": "Bravo"}),
        ("Observation", {"focus:Patient.name": "Bravo"}),  # A's own obs, pointing at B
        ("Patient", {"_has:Observation:focus:code": "4444-4"}),  # B's obs, pointing at A
        ("Patient", {"_has:Observation:subject:code": "1111-1", "_id": "B"}),
    ]
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with _as(world, admin) as c:  # each query finds something without restriction
        for type_, params in queries:
            assert ids((await c.get(f"/fhir/{type_}", params=params)).json()), params
    async with _as(world, world.patient_a) as c:
        for type_, params in queries:
            r = await c.get(f"/fhir/{type_}", params=params)
            assert r.status_code == 200 and ids(r.json()) == [], params
        own = await c.get("/fhir/Patient", params={"_has:Observation:subject:code": "1111-1"})
        assert ids(own.json()) == ["Patient/A"]


async def test_chain_into_an_unscoped_type_is_403(world: World) -> None:
    obs_only = world.token(("patient/Observation.rs",), role="patient", kind="user", patient="A")
    async with _as(world, obs_only) as c:
        r = await c.get("/fhir/Observation", params={"subject:Patient.name": "Alpha"})
        assert r.status_code == 403 and "subject:Patient.name" in issue_text(r)
        r = await c.get("/fhir/Observation", params={"_has:DiagnosticReport:result:code": "x"})
        assert r.status_code == 403


async def test_history_lists_only_visible_resources(world: World) -> None:
    async with _as(world, world.patient_a) as c:
        system = (await c.get("/fhir/_history")).json()
        visible = history_ids(system)
        assert "Patient/A" in visible and "Observation/obs-a-lab" in visible
        assert not {"Patient/B", "Observation/obs-b-lab", "Observation/obs-b-focus"} & visible
        assert system["total"] == len(system["entry"])
        typed = (await c.get("/fhir/Observation/_history")).json()
        assert history_ids(typed) == {
            "Observation/obs-a-lab",
            "Observation/obs-a-vital",
            "Observation/obs-a-focus",
        }
        instance = (await c.get("/fhir/Observation/obs-a-lab/_history")).json()
        assert history_ids(instance) == {"Observation/obs-a-lab"}


async def test_granular_category_scope(world: World) -> None:
    async with _as(world, world.lab_only_a) as c:
        lab = (await c.get("/fhir/Observation")).json()
        assert ids(lab) == ["Observation/obs-a-focus", "Observation/obs-a-lab"]
        assert (await c.get("/fhir/Observation/obs-a-lab")).status_code == 200
        assert (await c.get("/fhir/Observation/obs-a-vital")).status_code == 404
        assert (await c.get("/fhir/Observation/obs-b-lab")).status_code == 404
        vital = await c.get("/fhir/Observation", params={"category": "vital-signs"})
        assert ids(vital.json()) == []


async def test_clinician_sees_only_their_organizations_patients(world: World) -> None:
    async with _as(world, world.clinician_org1) as c:
        assert (await c.get("/fhir/Patient/A")).status_code == 200
        assert (await c.get("/fhir/Patient/B")).status_code == 404
        assert (await c.get("/fhir/Observation/obs-b-lab")).status_code == 404
        assert ids((await c.get("/fhir/Patient")).json()) == ["Patient/A"]
        observations = ids((await c.get("/fhir/Observation")).json())
        assert observations == [
            "Observation/obs-a-focus",
            "Observation/obs-a-lab",
            "Observation/obs-a-vital",
        ]
        # Practitioner and Organization are nobody's patient data
        assert len(ids((await c.get("/fhir/Organization")).json())) == 2


async def test_admin_and_users_without_organization_see_all(world: World) -> None:
    admin_user = world.token(("user/*.cruds",), role="admin", kind="user", organization="org1")
    free = world.token(("user/*.rs",), role="clinician", kind="user")
    for headers in (admin_user, free):
        async with _as(world, headers) as c:
            assert (await c.get("/fhir/Patient/B")).status_code == 200
            assert len(ids((await c.get("/fhir/Patient")).json())) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Patient/B'%20OR%20'1'='1",
        "/fhir/Patient/..%2FPatient%2FB",
        "/fhir/Patient/%2e%2e/B",
        "/fhir/Patient/B%00",
        "/fhir/Patient/A%2F..%2FB",
        "/fhir/Patient/../Patient/B",
        "/fhir/Observation?subject=Patient/B'--",
        "/fhir/Observation?subject=Patient%2FB%00",
        "/fhir/Observation?_id=obs-b-lab%27%20OR%201%3D1--",
        "/fhir/Observation?code=1111-1')%20OR%20('1'='1",
        "/fhir/Observation?subject:Patient.name=Bravo'%20OR%201=1--",
        "/fhir/Observation?_include=Observation:subject:Patient%27",
        "/fhir/Patient?_has:Observation:subject:code=1'%3B%20DROP%20TABLE%20resource%3B--",
        "/fhir/Patient/B/Observation%2F..%2F..",
        "/fhir/Patient?name=%22Bravo%22",
    ],
)
async def test_injection_and_path_tricks_fail_cleanly(world: World, path: str) -> None:
    async with _as(world, world.patient_a) as c:
        r = await c.get(path)
        assert r.status_code < 500, r.text
        if r.status_code == 200:
            body = r.json()
            found = ids(body) if body["resourceType"] == "Bundle" else [f"Patient/{body['id']}"]
            assert not {"Patient/B", "Observation/obs-b-lab"} & set(found), path
        assert b'"family":"Bravo"' not in r.content
        assert (await c.get("/fhir/Patient/A")).status_code == 200  # nothing broke
