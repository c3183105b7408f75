"""`$predict`, CDS Hooks and model cards over HTTP, with a real trained model and real
(synthetic) patients in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from api_helpers import bearer, issue_text
from starlette.applications import Starlette

from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.fhir.validation import validate_resource
from carebase.ml import registry, serving
from carebase.ml.cds_schema import errors_of, response_issues
from carebase.ml.tasks import load_task
from carebase.store.base import Store
from ml_serving_data import TASK, load_patients, trained_model
from shared_data import SHARED

pytestmark = pytest.mark.asyncio


@pytest.fixture
def served(store: Store) -> dict[str, Any]:
    """Two patients in the store and an active model of TASK."""
    people = load_patients(store, 2)
    record = registry.register(store, trained_model())
    registry.promote(store, record.id)
    return {"patients": people, "model": registry.get(store, record.id)}


def _predict_url(patient_id: str, query: str = "") -> str:
    return f"/fhir/Patient/{patient_id}/$predict" + (f"?{query}" if query else "")


async def test_predict_returns_a_valid_risk_assessment(
    client: httpx.AsyncClient, served: dict[str, Any], store: Store, audit: MemoryAuditTrail
) -> None:
    (pid, resources), _ = served["patients"]
    model = served["model"]
    r = await client.get(_predict_url(pid, f"model={model.id}"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i for i in validate_resource(body) if i.severity == "error"] == []
    assert (body["resourceType"], body["status"]) == ("RiskAssessment", "final")
    assert body["subject"] == {"reference": f"Patient/{pid}"}
    assert body["method"]["coding"][0]["code"] == model.id
    probability = body["prediction"][0]["probabilityDecimal"]
    assert 0 <= probability <= 1
    # the same as predicting directly from the patient's resources
    direct = serving.predict(model, registry.load(store, model.id), pid, resources)
    assert probability == pytest.approx(direct.value, abs=1e-6)
    known = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert {b["reference"] for b in body.get("basis", [])} <= known
    assert "Top contributing factors" in body["prediction"][0]["rationale"]
    entry = audit.entries[-1]
    assert (entry.interaction, entry.action, entry.outcome) == ("operation", "E", "0")
    assert pid in entry.patients and f"Patient/{pid}" in entry.entities


async def test_persist_stores_the_risk_assessment_and_audits_the_create(
    client: httpx.AsyncClient, served: dict[str, Any], audit: MemoryAuditTrail
) -> None:
    (pid, _), _ = served["patients"]
    r = await client.post(_predict_url(pid, "persist=true"))
    assert r.status_code == 201, r.text
    stored = await client.get(f"/fhir/RiskAssessment/{r.json()['id']}")
    assert stored.status_code == 200 and stored.json()["subject"]["reference"] == f"Patient/{pid}"
    creates = [e for e in audit.entries if e.interaction == "create"]
    assert creates and creates[-1].entities == (f"RiskAssessment/{r.json()['id']}",)
    # a Parameters body works too
    params = {"resourceType": "Parameters",
              "parameter": [{"name": "persist", "valueBoolean": False}]}  # fmt: skip
    r = await client.post(_predict_url(pid), json=params)
    assert r.status_code == 200 and "id" not in r.json()


async def test_a_patient_token_predicts_only_for_itself(
    app: Starlette, served: dict[str, Any]
) -> None:
    (a, _), (b, _) = served["patients"]
    headers = bearer(app, ("patient/*.rs",), kind="user", role="patient", patient=a,
                     subject="pat")  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        own = await c.get(_predict_url(a), headers=headers)
        other = await c.get(_predict_url(b), headers=headers)
        anonymous = await c.get(_predict_url(a))
    assert own.status_code == 200, own.text
    assert other.status_code == 404
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("query", "status", "where"),
    [
        ("model=nope-v1", 404, "model"),
        ("persist=maybe", 400, "persist"),
        ("colour=blue", 400, "colour"),
        ("model=", 400, "model"),
    ],
)
async def test_bad_parameters_name_the_parameter(
    client: httpx.AsyncClient, served: dict[str, Any], query: str, status: int, where: str
) -> None:
    (pid, _), _ = served["patients"]
    r = await client.get(_predict_url(pid, query))
    assert r.status_code == status, r.text
    assert r.json()["issue"][0]["expression"] == [where]


async def test_retired_and_candidate_models_do_not_serve(
    client: httpx.AsyncClient, served: dict[str, Any], store: Store
) -> None:
    (pid, _), _ = served["patients"]
    candidate = registry.register(store, trained_model())
    r = await client.get(_predict_url(pid, f"model={candidate.id}"))
    assert r.status_code == 409 and "candidate" in issue_text(r)
    registry.retire(store, served["model"].id)
    r = await client.get(_predict_url(pid, f"model={served['model'].id}"))
    assert r.status_code == 409 and "retired" in issue_text(r)
    r = await client.get(_predict_url(pid))
    assert r.status_code == 404 and "No model is active" in issue_text(r)
    assert (await client.get(_predict_url("nobody-here"))).status_code == 404


# --- CDS Hooks ------------------------------------------------------------------------------


def _hook(patient_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        **extra,
    }


async def test_discovery_lists_active_tasks_without_a_token(
    anonymous_client: httpx.AsyncClient, served: dict[str, Any], store: Store
) -> None:
    r = await anonymous_client.get("/cds-services")
    assert r.status_code == 200
    (service,) = r.json()["services"]
    assert (service["id"], service["hook"]) == (TASK, "patient-view")
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert service["prefetch"]["conditions"] == "Condition?patient={{context.patientId}}"
    registry.retire(store, served["model"].id)
    assert (await anonymous_client.get("/cds-services")).json() == {"services": []}


async def test_patient_view_reads_the_store_and_answers_a_card(
    client: httpx.AsyncClient, served: dict[str, Any], audit: MemoryAuditTrail
) -> None:
    (pid, _), _ = served["patients"]
    r = await client.post(f"/cds-services/{TASK}", json=_hook(pid))
    assert r.status_code == 200, r.text
    body = r.json()
    assert errors_of(response_issues(body)) == []
    (card,) = body["cards"]
    assert card["indicator"] in ("info", "warning", "critical")
    assert "predicted risk" in card["summary"] and "Top contributing factors" in card["detail"]
    entry = audit.entries[-1]
    assert (entry.interaction, entry.outcome) == ("operation", "0") and pid in entry.patients
    link = card["links"][0]["url"]
    assert link == f"http://testserver/ml/models/{served['model'].id}/card"
    assert (await client.get(link)).status_code == 200


async def test_patient_view_with_full_prefetch_needs_no_store_access(
    app: Starlette, client: httpx.AsyncClient, served: dict[str, Any]
) -> None:
    # the prefetch a CDS client sends for the service's templates (null: nothing found)
    (pid, resources), (other, _) = served["patients"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    prefetch: dict[str, Any] = {"patient": by_type["Patient"][0]}
    for key, template in serving.prefetch_templates(load_task(TASK)).items():
        entries = [{"resource": r} for r in by_type.get(template.split("?")[0], [])]
        if key != "patient":
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    # a token for another patient cannot read this one: the prefetch alone must do
    headers = bearer(app, ("patient/*.rs",), kind="user", role="patient", patient=other,
                     subject="pat")  # fmt: skip
    with_prefetch = await client.post(
        f"/cds-services/{TASK}", json=_hook(pid, prefetch=prefetch), headers=headers
    )
    assert with_prefetch.status_code == 200, with_prefetch.text
    from_store = await client.post(f"/cds-services/{TASK}", json=_hook(pid))
    assert with_prefetch.json()["cards"][0]["summary"] == from_store.json()["cards"][0]["summary"]
    # without the prefetch, that token cannot read the patient: 412 naming what is missing
    partial = {"patient": prefetch["patient"]}
    r = await client.post(
        f"/cds-services/{TASK}", json=_hook(pid, prefetch=partial), headers=headers
    )
    assert r.status_code == 412, r.text
    assert "conditions" in issue_text(r)


async def test_malformed_hook_requests_are_400_naming_the_field(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient, served: dict[str, Any]
) -> None:
    bad = json.loads(
        (SHARED / "conformance/cds-hooks/cdshooks-request-patient-view-bad.json").read_text()
    )
    r = await client.post(f"/cds-services/{TASK}", json=bad)
    assert r.status_code == 400
    places = {e for i in r.json()["issue"] for e in i.get("expression", [])}
    assert "CDSHooksRequest.context.patientId" in places
    (pid, _), _ = served["patients"]
    r = await client.post(f"/cds-services/{TASK}", json={**_hook(pid), "hook": "order-sign"})
    assert r.status_code == 400  # order-sign context needs draftOrders; and it is not ours
    r = await client.post("/cds-services/no_such_task", json=_hook(pid))
    assert r.status_code == 404
    # the body is parsed with floats (the prefetch is only read), malformed JSON still 400
    for raw in (b'{"hook": "patient-view",', b'{"hook": NaN}', b""):
        r = await client.post(f"/cds-services/{TASK}", content=raw)
        assert r.status_code == 400, r.text
        assert "JSON" in issue_text(r) or "empty" in issue_text(r)
    r = await anonymous_client.post(f"/cds-services/{TASK}", json=_hook(pid))
    assert r.status_code == 401


async def test_model_card_needs_a_token_and_serves_its_plots(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient, served: dict[str, Any]
) -> None:
    model_id = served["model"].id
    assert (await anonymous_client.get(f"/ml/models/{model_id}/card")).status_code == 401
    r = await client.get(f"/ml/models/{model_id}/card")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert model_id in r.text and 'src="calibration.png"' in r.text
    assert 'src="roc.png"' in r.text and "95% interval" in r.text
    # the card's inline style is allowed by its hash, nothing else inline
    policy = r.headers["content-security-policy"]
    assert "style-src 'self' 'sha256-" in policy and "script-src 'self';" in policy
    for name in ("calibration.png", "roc.png"):
        png = await client.get(f"/ml/models/{model_id}/{name}")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert (await client.get(f"/ml/models/{model_id}/nothing.png")).status_code == 404
    assert (await client.get("/ml/models/nope-v3/card")).status_code == 404
