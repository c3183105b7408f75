"""ViewDefinition as a stored resource and `$viewdefinition-run` over HTTP, with real tokens."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
from access_world import World, build_world
from api_helpers import FHIR_JSON, issue_text
from starlette.applications import Starlette

from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.fhir import json_io

pytestmark = pytest.mark.asyncio

RUN = "/fhir/ViewDefinition/$viewdefinition-run"

OBS_VIEW: dict[str, Any] = {
    "resourceType": "ViewDefinition",
    "url": "https://example.org/views/obs",
    "name": "obs",
    "status": "active",
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "code", "path": "code.coding.code", "collection": True},
                {"name": "category", "path": "category.coding.code.first()", "type": "code"},
            ]
        }
    ],
}


def params(*entries: tuple[str, object]) -> dict[str, Any]:
    """A Parameters body: resources go in `resource`, strings in valueString, ints in
    valueInteger, booleans in valueBoolean."""
    out = []
    for name, value in entries:
        if isinstance(value, dict):
            out.append({"name": name, "resource": value})
        elif isinstance(value, bool):
            out.append({"name": name, "valueBoolean": value})
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


async def run(
    client: httpx.AsyncClient, *entries: tuple[str, object], url: str = RUN, **kw: Any
) -> httpx.Response:
    headers = {**FHIR_JSON, **kw.pop("headers", {})}
    return await client.post(url, json=params(*entries), headers=headers, **kw)


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def location(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


@pytest_asyncio.fixture
async def world(client: httpx.AsyncClient, app: Starlette) -> World:
    return await build_world(client, app)


# --- ViewDefinition as a resource -------------------------------------------------------------


async def test_view_definitions_are_stored_searched_and_validated(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/fhir/ViewDefinition", json=OBS_VIEW, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    id_ = r.json()["id"]
    for query in ("name=obs", "url=https://example.org/views/obs", "status=active",
                  "resource=Observation"):  # fmt: skip
        bundle = (await client.get(f"/fhir/ViewDefinition?{query}")).json()
        assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [id_], query
    assert (await client.get("/fhir/ViewDefinition?resource=Patient")).json().get("entry") is None
    changed = {**OBS_VIEW, "id": id_, "status": "retired"}
    r = await client.put(f"/fhir/ViewDefinition/{id_}", json=changed, headers=FHIR_JSON)
    assert r.status_code == 200 and r.json()["status"] == "retired"
    bad = orjson.loads(orjson.dumps(changed))
    bad["select"][0]["column"][1]["path"] = "subject.where("
    r = await client.put(f"/fhir/ViewDefinition/{id_}", json=bad, headers=FHIR_JSON)
    assert r.status_code == 400
    assert "ViewDefinition.select[0].column[1].path" in issue_text(r)
    bad["select"][0]["column"][1] = {"name": "patient", "path": "id", "colour": "red"}
    r = await client.post("/fhir/ViewDefinition", json=bad, headers=FHIR_JSON)
    assert r.status_code == 400 and "ViewDefinition.select[0].column[1].colour" in issue_text(r)
    assert (await client.delete(f"/fhir/ViewDefinition/{id_}")).status_code in (200, 204)
    assert (await client.get(f"/fhir/ViewDefinition/{id_}")).status_code == 410


async def test_capability_statement_lists_the_operation(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    rest = statement["rest"][0]
    assert "viewdefinition-run" in [op["name"] for op in rest["operation"]]
    view_entry = next(r for r in rest["resource"] if r["type"] == "ViewDefinition")
    assert "viewdefinition-run" in [op["name"] for op in view_entry["operation"]]
    assert {p["name"] for p in view_entry["searchParam"]} >= {"name", "url", "status", "resource"}


# --- running views ---------------------------------------------------------------------------


async def test_inline_view_over_server_data_in_each_format(
    client: httpx.AsyncClient, world: World
) -> None:
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW)))
    assert sorted(r["id"] for r in rows) == [
        "obs-a-focus", "obs-a-lab", "obs-a-vital", "obs-b-focus", "obs-b-lab"
    ]  # fmt: skip
    assert next(r for r in rows if r["id"] == "obs-a-lab") == {
        "id": "obs-a-lab", "patient": "A", "code": ["1111-1"], "category": "laboratory"
    }  # fmt: skip
    r = await run(client, ("viewResource", OBS_VIEW), ("_format", "json"))
    assert r.headers["content-type"].startswith("application/json")
    assert sorted(x["id"] for x in r.json()) == sorted(x["id"] for x in rows)
    r = await run(client, ("viewResource", OBS_VIEW), headers={"Accept": "text/csv"})
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["id", "patient", "code", "category"] and len(table) == 6
    assert ["obs-a-lab", "A", '["1111-1"]', "laboratory"] in table
    r = await run(client, ("viewResource", OBS_VIEW), ("_format", "csv"), ("header", False))
    assert len(list(csv.reader(io.StringIO(r.text)))) == 5
    r = await run(client, ("viewResource", OBS_VIEW), ("_format", "parquet"))
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    parquet = pq.read_table(io.BytesIO(r.content))
    assert parquet.column_names == ["id", "patient", "code", "category"]
    assert sorted(parquet.column("id").to_pylist()) == sorted(x["id"] for x in rows)
    assert str(parquet.schema.field("code").type) == "list<element: string>"


async def test_stored_views_by_instance_and_reference(
    client: httpx.AsyncClient, world: World
) -> None:
    r = await client.put("/fhir/ViewDefinition/obs", json={**OBS_VIEW, "id": "obs"},
                         headers=FHIR_JSON)  # fmt: skip
    assert r.status_code == 201, r.text
    by_instance = ndjson(await client.get("/fhir/ViewDefinition/obs/$viewdefinition-run"))
    by_id = ndjson(await client.get(RUN, params={"viewReference": "ViewDefinition/obs"}))
    by_url = ndjson(await client.get(RUN, params={"viewReference": OBS_VIEW["url"]}))
    system = ndjson(await client.get("/fhir/$viewdefinition-run?viewReference=obs"))
    assert len(by_instance) == 5 and by_instance == by_id == by_url == system
    r = await client.get(RUN, params={"viewReference": "ViewDefinition/nope"})
    assert r.status_code == 404
    r = await client.get("/fhir/ViewDefinition/obs/$viewdefinition-run?viewReference=obs")
    assert r.status_code == 400 and location(r) == ["viewReference"]


async def test_inline_resources_patient_group_since_and_limit(
    client: httpx.AsyncClient, world: World
) -> None:
    inline = {
        "resourceType": "Observation", "id": "x1", "status": "final",
        "code": {"coding": [{"code": "9"}]}, "subject": {"reference": "Patient/Z"},
    }  # fmt: skip
    other = {"resourceType": "Patient", "id": "Z"}
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("resource", inline),
                            ("resource", other)))  # fmt: skip
    assert rows == [{"id": "x1", "patient": "Z", "code": ["9"], "category": None}]
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("resource", inline),
                            ("patient", "Patient/Q")))  # fmt: skip
    assert rows == []
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("patient", "Patient/A")))
    assert sorted(r["id"] for r in rows) == ["obs-a-focus", "obs-a-lab", "obs-a-vital"]
    group = {
        "resourceType": "Group", "id": "g1", "type": "person", "actual": True,
        "member": [{"entity": {"reference": "Patient/B"}}],
    }  # fmt: skip
    assert (await client.put("/fhir/Group/g1", json=group, headers=FHIR_JSON)).status_code == 201
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("group", "Group/g1")))
    assert sorted(r["id"] for r in rows) == ["obs-b-focus", "obs-b-lab"]  # focus: no compartment
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("_since", "2000-01-01")))
    assert len(rows) == 5
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("_since", "2999-01-01")))
    assert rows == []
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("_limit", 2)))
    assert len(rows) == 2


async def test_decimals_keep_written_digits_and_are_written_as_numbers(
    client: httpx.AsyncClient, world: World
) -> None:
    view = {
        **OBS_VIEW,
        "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {
                "forEach": "component",
                "column": [
                    {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                    {"name": "low", "path": "value.ofType(Quantity).value.lowBoundary()"},
                ],
            },
        ],
    }
    text = (
        b'{"resourceType": "Observation", "id": "w1", "status": "final", "code": {"text": "w"},'
        b' "component": [{"code": {"text": "a"}, "valueQuantity": {"value": 70.50}}]}'
    )
    r = await client.put("/fhir/Observation/w1", content=text, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    inline = json_io.loads(text.replace(b"w1", b"w2"))
    expected = {"value": 70.5, "low": 70.495}  # 70.50 stands for 70.495..70.505
    assert ndjson(await run(client, ("viewResource", view))) == [{"id": "w1", **expected}]

    async def run_inline(fmt: str) -> httpx.Response:
        # the body written by json_io, so the inline resource says 70.50 too
        body = json_io.dumps(params(("viewResource", view), ("resource", inline)))
        r = await client.post(RUN, content=body, params={"_format": fmt}, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
        return r

    assert b"70.50" in json_io.dumps(inline)
    assert ndjson(await run_inline("ndjson")) == [{"id": "w2", **expected}]
    assert (await run_inline("json")).json() == [{"id": "w2", **expected}]
    assert (await run_inline("csv")).text.splitlines()[1] == "w2,70.5,70.495"


# --- access control and audit ----------------------------------------------------------------


async def test_patient_token_sees_only_its_compartment_and_is_audited(
    client: httpx.AsyncClient, world: World, audit: MemoryAuditTrail
) -> None:
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), headers=world.patient_a))
    assert sorted(r["id"] for r in rows) == ["obs-a-focus", "obs-a-lab", "obs-a-vital"]
    entry = audit.entries[-1]
    assert entry.interaction == "operation" and entry.outcome == "0"
    assert entry.principal.patient == "A" and "A" in entry.patients
    assert "Observation/obs-a-lab" in entry.entities
    assert "Observation/obs-b-lab" not in entry.entities
    assert entry.query is not None and "view=obs" in entry.query
    # a scope narrowed to laboratory observations narrows the rows too
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), headers=world.lab_only_a))
    assert {r["category"] for r in rows} == {"laboratory"}
    assert sorted(r["id"] for r in rows) == ["obs-a-focus", "obs-a-lab"]
    # asking for another patient's rows gives none, not theirs
    rows = ndjson(await run(client, ("viewResource", OBS_VIEW), ("patient", "B"),
                            headers=world.patient_a))  # fmt: skip
    assert rows == []


async def test_missing_scope_is_403_and_audited(
    client: httpx.AsyncClient, world: World, audit: MemoryAuditTrail
) -> None:
    only_patients = world.token(("patient/Patient.rs",), role="patient", patient="A",
                                kind="user", subject="p")  # fmt: skip
    r = await run(client, ("viewResource", OBS_VIEW), headers=only_patients)
    assert r.status_code == 403 and "Observation" in issue_text(r)
    assert audit.entries[-1].outcome == "4" and audit.entries[-1].interaction == "operation"
    # inline resources read nothing stored, but still need some scope for the type
    inline = {"resourceType": "Observation", "id": "i", "status": "final", "code": {}}
    r = await run(client, ("viewResource", OBS_VIEW), ("resource", inline), headers=only_patients)
    assert r.status_code == 403


async def test_unauthenticated_is_401(anonymous_client: httpx.AsyncClient) -> None:
    r = await anonymous_client.post(RUN, json=params(("viewResource", OBS_VIEW)),
                                    headers=FHIR_JSON)  # fmt: skip
    assert r.status_code == 401


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "query", "where"),
    [
        ([("viewResource", OBS_VIEW)], "_format=xml", "_format"),
        ([("viewResource", OBS_VIEW), ("viewReference", "ViewDefinition/x")], "", "viewReference"),
        ([], "", "viewResource"),
        ([("viewResource", OBS_VIEW)], "colour=red", "colour"),
        ([("viewResource", OBS_VIEW), ("_limit", 0)], "", "_limit"),
        ([("viewResource", OBS_VIEW), ("_since", "yesterday")], "", "_since"),
        ([("viewResource", OBS_VIEW), ("patient", "Group/1")], "", "patient"),
        ([("viewResource", {"resourceType": "Patient"})], "", "viewResource"),
        (
            [
                (
                    "viewResource",
                    {**OBS_VIEW, "select": [{"column": [{"name": "1x", "path": "id"}]}]},
                )
            ],
            "",
            "ViewDefinition.select[0].column[0].name",
        ),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, entries: list[tuple[str, object]], query: str, where: str
) -> None:
    r = await run(client, *entries, url=f"{RUN}?{query}" if query else RUN)
    assert r.status_code == 400, r.text
    assert where in location(r) or where in issue_text(r)


async def test_patient_filter_on_a_type_outside_the_compartment_is_400(
    client: httpx.AsyncClient,
) -> None:
    view = {**OBS_VIEW, "resource": "Organization",
            "select": [{"column": [{"name": "id", "path": "id"}]}]}  # fmt: skip
    r = await run(client, ("viewResource", view), ("patient", "A"))
    assert r.status_code == 400 and location(r) == ["patient"]
    r = await client.get(RUN, params={"viewResource": "{}"})
    assert r.status_code == 400 and location(r) == ["viewResource"]
