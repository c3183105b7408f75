"""The CapabilityStatement at [base]/metadata reflects the route table and definitions."""

from __future__ import annotations

import httpx
import pytest

from carebase.api.route_table import capability_tokens
from carebase.fhir.definitions.loader import get_definitions


@pytest.mark.asyncio
async def test_metadata(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert "application/fhir+json" in cs["format"]
    rest = cs["rest"][0]
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}
    types = {res["type"]: res for res in rest["resource"]}
    assert set(types) == set(get_definitions().resource_types)
    pat = types["Patient"]
    codes = {i["code"] for i in pat["interaction"]}
    assert codes == {
        "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
        "create", "search-type",
    }  # fmt: skip
    assert pat["versioning"] == "versioned-update"
    assert pat["readHistory"] is True
    assert pat["updateCreate"] is True
    assert pat["conditionalCreate"] is True
    assert pat["conditionalUpdate"] is True
    assert pat["conditionalDelete"] == "single"
    names = {p["name"] for p in pat["searchParam"]}
    assert {"family", "birthdate", "identifier", "_id", "_lastUpdated"} <= names
    assert {
        "name": "validate",
        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    } in pat["operation"]
    assert cs["implementation"]["url"] == "http://testserver/fhir"
    pretty = await client.get("/fhir/metadata", params={"_pretty": "true"})
    assert pretty.json() == cs


def test_tokens_come_from_routes() -> None:
    tokens = capability_tokens()
    assert {"read", "create", "transaction", "op:validate", "conditional-delete"} <= tokens
