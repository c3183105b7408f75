"""Acceptance: every official R4 example round-trips through the REST API (SQLite, PostgreSQL).

The validator is the oracle. Examples it accepts must be accepted by the server (PUT with the
example's id gives 201, POST gives 201 with a server id) and read back identical apart from
`meta.versionId`/`meta.lastUpdated`; the ones it rejects (20 official examples that break
the R4 rules, listed in tests/fhir/test_validation.py) must be refused with 400 and an
OperationOutcome naming the location, leaving nothing behind. AuditEvents are the exception:
`[base]/AuditEvent` is carebase's own append-only audit log, so writing them is refused (405).
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_helpers import BASE, FHIR_JSON

from carebase.fhir.bundle import is_valid_id
from carebase.fhir.validation import validate_resource

pytestmark = pytest.mark.asyncio

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "r4-examples.ndjson.gz"
KNOWN_INVALID_COUNT = 20  # tests/fhir/test_validation.py: KNOWN_INVALID
CONCURRENCY = 4


def load_examples() -> list[tuple[bytes, dict[str, Any], list[str]]]:
    """(raw line, resource, error locations the validator reports) for each example."""
    out = []
    with gzip.open(EXAMPLES) as lines:
        for line in lines:
            raw = line.strip()
            resource = orjson.loads(raw)
            errors = [i for i in validate_resource(resource) if i.severity == "error"]
            where = [expr for issue in errors for expr in issue.expression]
            if errors and not where:  # rejected, yet naming no place: the check below fails
                where = ["(the validator named no location)"]
            out.append((raw, resource, where))
    return out


@pytest.fixture(scope="module")
def examples() -> list[tuple[bytes, dict[str, Any], list[str]]]:
    return load_examples()


def exact(text: str | bytes) -> Any:
    """Parsed JSON whose decimals keep their written form (1.50 is not 1.5: R4 says the
    precision of a decimal is significant)."""
    return json.loads(text, parse_float=lambda written: ("decimal", written))


def without_version_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy without meta.versionId/lastUpdated (and without meta when that empties it)."""
    out = copy.deepcopy(resource)
    meta = out.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if not meta:
            del out["meta"]
    return out


def outcome_problem(r: httpx.Response, expected_where: list[str]) -> str | None:
    """What is wrong with a rejection response (None when it is a proper 400 naming a place)."""
    if r.status_code != 400:
        return f"status {r.status_code} (expected 400): {r.text[:300]}"
    body = r.json()
    if body.get("resourceType") != "OperationOutcome":
        return f"body is not an OperationOutcome: {r.text[:300]}"
    found = {e for issue in body.get("issue", []) for e in issue.get("expression", [])}
    if not found & set(expected_where):
        return f"issue expressions {sorted(found)} name none of {expected_where[:3]}"
    return None


async def check_example(
    client: httpx.AsyncClient, raw: bytes, resource: dict[str, Any], where: list[str]
) -> list[str]:
    """Every way the server mishandles one example (empty when it behaves)."""
    failures: list[str] = []
    type_, id_ = resource["resourceType"], resource["id"]
    key = f"{type_}/{id_}"
    url = f"/fhir/{key}"
    put = await client.put(url, content=raw, headers=FHIR_JSON)

    if where:  # the validator rejects it: so must the server, and write nothing
        # an id that is not a valid FHIR id is refused from the URL before the body
        expect = where if is_valid_id(id_) else ["id"]
        if problem := outcome_problem(put, expect):
            failures.append(f"PUT {key}: {problem}")
        post = await client.post(f"/fhir/{type_}", content=raw, headers=FHIR_JSON)
        if problem := outcome_problem(post, where):
            failures.append(f"POST {key}: {problem}")
        if is_valid_id(id_) and (got := await client.get(url)).status_code != 404:
            failures.append(f"GET {key} after a rejected PUT: {got.status_code}")
        return failures

    if put.status_code != 201:
        return [f"PUT {key}: {put.status_code} (expected 201): {put.text[:300]}"]
    read = await client.get(url)
    if read.status_code != 200:
        return [f"GET {key}: {read.status_code}: {read.text[:300]}"]
    stored = read.json()
    if stored.get("meta", {}).get("versionId") != "1":
        failures.append(f"GET {key}: meta.versionId {stored.get('meta')} (expected '1')")
    if without_version_meta(exact(read.content)) != without_version_meta(exact(raw)):
        failures.append(f"GET {key}: differs from the example: {read.text[:300]}")
    if put.json() != stored:
        failures.append(f"PUT {key}: returned body differs from what GET returns")
    vread = await client.get(f"{url}/_history/1")
    if vread.status_code != 200 or vread.json() != stored:
        failures.append(f"vread {key}/_history/1: {vread.status_code} {vread.text[:200]}")

    post = await client.post(f"/fhir/{type_}", content=raw, headers=FHIR_JSON)
    if post.status_code != 201:
        return [*failures, f"POST {key}: {post.status_code} (expected 201): {post.text[:300]}"]
    created = post.json()
    new_id = created.get("id")
    location = post.headers.get("location", "")
    if not new_id or new_id == id_:
        failures.append(f"POST {key}: the server kept or lost the id ({new_id!r})")
    elif location != f"{BASE}/{type_}/{new_id}/_history/1":
        failures.append(f"POST {key}: Location {location!r} for id {new_id}")
    expected = {**without_version_meta(exact(raw)), "id": new_id}
    if without_version_meta(exact(post.content)) != expected:
        failures.append(f"POST {key}: stored body differs: {post.text[:300]}")
    return failures


async def test_official_examples_round_trip(
    client: httpx.AsyncClient, examples: list[tuple[bytes, dict[str, Any], list[str]]]
) -> None:
    assert len(examples) == 815
    rejected = sum(1 for _, _, where in examples if where)
    assert rejected == KNOWN_INVALID_COUNT, f"the validator rejects {rejected} official examples"
    # a few examples in flight at once (the PostgreSQL store has a pool of 4 connections)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(raw: bytes, resource: dict[str, Any], where: list[str]) -> list[str]:
        async with limit:
            if resource["resourceType"] == "AuditEvent":
                r = await client.put(
                    f"/fhir/AuditEvent/{resource['id']}", content=raw, headers=FHIR_JSON
                )
                return [] if r.status_code == 405 else [f"AuditEvent written: {r.status_code}"]
            return await check_example(client, raw, resource, where)

    results = await asyncio.gather(*(one(*example) for example in examples))
    failures = [failure for found in results for failure in found]
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    audit_events = sum(1 for _, r, where in examples if r["resourceType"] == "AuditEvent")
    assert audit_events == 9
    history = await client.get("/fhir/_history", params={"_count": "1"})
    assert history.json()["total"] == 2 * (len(examples) - rejected - audit_events)


async def test_decimal_precision_is_kept(client: httpx.AsyncClient) -> None:
    """1.50 comes back as 1.50 (the examples above check this too, via `exact`)."""
    raw = (
        b'{"resourceType":"Observation","id":"dec","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":1.50,"unit":"mmol/L"}}'
    )
    assert (await client.put("/fhir/Observation/dec", content=raw, headers=FHIR_JSON)).is_success
    read = await client.get("/fhir/Observation/dec")
    assert b'"value":1.50' in read.content, read.text
