"""Acceptance: Synthea transaction Bundles through POST [base] (SQLite and PostgreSQL).

Synthea writes one transaction Bundle per patient (plus one for practitioners and one for
hospitals); every entry is `POST Type` with a `urn:uuid:` fullUrl, and references between
entries use those urns. The server must create every entry, rewrite each urn to the
`Type/id` it assigned, keep everything else as sent, and roll a failing Bundle back whole.

Synthea entries carry no `ifNoneExist`, so posting the same Bundle twice creates a second
copy of every resource (with new ids): that is the FHIR create semantics, not a bug.
"""

from __future__ import annotations

import copy
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_helpers import FHIR_JSON

pytestmark = pytest.mark.asyncio

PATIENT_BUNDLES = 8  # plus the practitioner and hospital Bundles: 10 in all
SAMPLE_EVERY = 5  # read back every 5th entry of each Bundle (and every Patient)

Json = dict[str, Any]


@pytest.fixture(scope="module")
def bundles(synthea_tar: Path) -> list[tuple[str, Json]]:
    """(file name, Bundle): practitioners and hospitals first, then the first patients."""
    info: list[tuple[str, Json]] = []
    patients: list[tuple[str, Json]] = []
    with tarfile.open(synthea_tar) as tar:
        for member in tar:
            name = Path(member.name).name
            if not member.isfile() or not name.endswith(".json"):
                continue
            is_info = name.startswith(("practitionerInformation", "hospitalInformation"))
            if not is_info and len(patients) >= PATIENT_BUNDLES:
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            (info if is_info else patients).append((name, orjson.loads(extracted.read())))
    info.sort(key=lambda item: not item[0].startswith("practitioner"))
    assert len(info) == 2 and len(patients) == PATIENT_BUNDLES
    return info + patients


def references(node: object) -> Iterator[Json]:
    """Every Reference-like object (a dict with a string `reference`) inside `node`."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def with_references(resource: Json, assigned: dict[str, str]) -> Json:
    """A copy of `resource` with each urn reference replaced by its assigned `Type/id`."""
    out = copy.deepcopy(resource)
    for ref in references(out):
        ref["reference"] = assigned.get(ref["reference"], ref["reference"])
    return out


def without_server_fields(resource: Json) -> Json:
    out = {k: v for k, v in resource.items() if k != "id"}
    meta = dict(out.pop("meta", {}))
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if meta:
        out["meta"] = meta
    return out


async def post_bundle(client: httpx.AsyncClient, bundle: Json) -> httpx.Response:
    return await client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)


async def total(client: httpx.AsyncClient, path: str = "/fhir/_history") -> int:
    r = await client.get(path, params={"_count": "1"})
    assert r.status_code == 200, r.text
    value: int = r.json()["total"]
    return value


async def test_synthea_transactions_round_trip(
    client: httpx.AsyncClient, bundles: list[tuple[str, Json]]
) -> None:
    failures: list[str] = []
    created: set[str] = set()  # Type/id of every new resource
    types: Counter[str] = Counter()
    sample: list[tuple[str, Json, dict[str, str]]] = []  # (Type/id, as sent, urn -> Type/id)
    for name, bundle in bundles:
        # patient Bundles repeat the practitioner/hospital urns of the first two: each
        # Bundle's urns are its own
        assigned: dict[str, str] = {}
        r = await post_bundle(client, bundle)
        assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:500]}"
        response = r.json()
        assert response["type"] == "transaction-response"
        assert len(response["entry"]) == len(bundle["entry"])
        for i, (sent, got) in enumerate(zip(bundle["entry"], response["entry"], strict=True)):
            resource = sent["resource"]
            type_ = resource["resourceType"]
            status = got["response"]["status"]
            location = got["response"].get("location", "")
            if not status.startswith("201"):
                failures.append(f"{name} entry[{i}] {type_}: status {status!r}")
                continue
            # location is [base]/Type/id/_history/1
            parts = location.split("/")
            if len(parts) < 4 or parts[-4] != type_ or parts[-2:] != ["_history", "1"]:
                failures.append(f"{name} entry[{i}]: location {location!r}")
                continue
            key = f"{type_}/{parts[-3]}"
            assigned[sent["fullUrl"]] = key
            created.add(key)
            types[type_] += 1
            if i % SAMPLE_EVERY == 0 or type_ == "Patient":
                sample.append((key, resource, assigned))
        assert len(assigned) == len(bundle["entry"]), f"{name}: a fullUrl is repeated"
    assert not failures, "\n".join(failures)
    entries = sum(len(bundle["entry"]) for _, bundle in bundles)
    assert len(created) == entries  # every entry got its own new resource

    # read back a sample: urn references rewritten to Type/id that resolve, the rest as sent
    resolved: dict[str, int] = {}
    for key, original, assigned in sample:
        r = await client.get(f"/fhir/{key}")
        if r.status_code != 200:
            failures.append(f"GET {key}: {r.status_code}")
            continue
        stored = r.json()
        if b"urn:uuid:" in r.content and any(
            ref["reference"].startswith("urn:uuid:") for ref in references(stored)
        ):
            failures.append(f"{key} still has urn:uuid references")
        expected = with_references(original, assigned)
        if without_server_fields(stored) != without_server_fields(expected):
            failures.append(f"{key} differs from what was sent: {r.text[:300]}")
        for ref in references(stored):
            target = ref["reference"]
            if target.startswith("#"):
                continue  # a contained resource
            if target not in resolved:
                resolved[target] = (await client.get(f"/fhir/{target}")).status_code
            if resolved[target] != 200:
                failures.append(f"{key} references {target}: GET gives {resolved[target]}")
        history = await client.get(f"/fhir/{key}/_history")
        if history.json().get("total") != 1:
            failures.append(f"{key}/_history: total {history.json().get('total')}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:50])
    assert len(resolved) > 50, sorted(resolved)[:10]

    # history counts: all, and per type
    assert await total(client) == entries
    for type_, count in types.items():
        assert await total(client, f"/fhir/{type_}/_history") == count, type_

    # posting a patient Bundle again creates a second copy of everything (no ifNoneExist)
    name, again = bundles[2]
    r = await post_bundle(client, again)
    assert r.status_code == 200, r.text[:500]
    second = [e["response"] for e in r.json()["entry"]]
    assert all(resp["status"].startswith("201") for resp in second), name
    new_keys = {"/".join(resp["location"].split("/")[-4:-2]) for resp in second}
    assert not new_keys & created
    assert await total(client) == entries + len(again["entry"])
    patients = Counter(e["resource"]["resourceType"] for e in again["entry"])["Patient"]
    assert await total(client, "/fhir/Patient/_history") == types["Patient"] + patients


def break_entry(bundle: Json, index: int) -> Json:
    """A copy of `bundle` whose entry `index` has an invalid resource (status as a number)."""
    broken = copy.deepcopy(bundle)
    resource = broken["entry"][index]["resource"]
    resource["status" if "status" in resource else "gender"] = 42
    return broken


def issue_expressions(r: httpx.Response) -> list[str]:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    for issue in body["issue"]:
        assert issue.get("severity") and issue.get("code") and issue.get("diagnostics"), issue
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


async def test_broken_transaction_changes_nothing(
    client: httpx.AsyncClient, bundles: list[tuple[str, Json]]
) -> None:
    r = await post_bundle(client, bundles[0][1])  # practitioners: the store is not empty
    assert r.status_code == 200, r.text[:500]
    before = await total(client)
    patients_before = await total(client, "/fhir/Patient/_history")
    bundle = bundles[2][1]
    last = len(bundle["entry"]) - 1

    # an invalid resource deep in the Bundle: 400 naming that entry, nothing written
    deep = last - 3
    r = await post_bundle(client, break_entry(bundle, deep))
    assert r.status_code == 400, r.text[:500]
    where = issue_expressions(r)
    assert any(e.startswith(f"Bundle.entry[{deep}].resource") for e in where), where
    assert await total(client) == before

    # a failure found only while writing, after every POST entry has run (PUT entries run
    # after POSTs): a version conflict on the last entry rolls the whole Bundle back
    late = copy.deepcopy(bundle)
    late["entry"].append(
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
            "resource": {"resourceType": "Basic", "id": "late", "code": {"text": "x"}},
            "request": {"method": "PUT", "url": "Basic/late", "ifMatch": 'W/"7"'},
        }
    )
    r = await post_bundle(client, late)
    assert r.status_code in (409, 412), r.text[:500]
    where = issue_expressions(r)
    assert any(e.startswith(f"Bundle.entry[{last + 1}]") for e in where), where
    assert await total(client) == before
    assert await total(client, "/fhir/Patient/_history") == patients_before
    assert (await client.get("/fhir/Basic/late")).status_code == 404

    # and the intact Bundle still goes in whole afterwards
    r = await post_bundle(client, bundle)
    assert r.status_code == 200, r.text[:500]
    assert await total(client) == before + len(bundle["entry"])
