"""Serving predictions: one patient's resources through an active model to a `Prediction`,
and the CDS Hooks side of it (discovery entries, prefetch, cards). No HTTP, no SQL.

A CDS service is a task: its id is the task name, and it predicts with the task's active
model at the time of the call, so promoting a new version changes what the service
answers without reconfiguring the EHR.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from carebase.errors import BadRequest
from carebase.ml.explain import predict_and_explain
from carebase.ml.features import patient_features
from carebase.ml.registry import ModelRecord
from carebase.ml.risk_assessment import Prediction, describe_factors, headline, scale_of
from carebase.ml.tasks import Task
from carebase.ml.training import TrainedModel

#: Probability at or above which a card is a warning, and a critical alert. Deliberately
#: simple: a site should set thresholds from the decision curve in the model card.
WARNING_AT, CRITICAL_AT = 0.2, 0.5
#: The resource types a patient-view service may ask the client to prefetch, beyond Patient
#: (those `ml.features` reads).
PREFETCH_TYPES = ("Condition", "Observation", "MedicationRequest", "Encounter")


def predict(
    record: ModelRecord,
    trained: TrainedModel,
    patient_id: str,
    resources: list[dict[str, Any]],
    now: datetime | None = None,
) -> Prediction:
    """The prediction of `trained` (registered as `record`) for one patient's resources."""
    at = now or datetime.now(UTC)
    row, used = patient_features(trained.task, resources, at)
    value, contributions = predict_and_explain(trained, row)
    factors = tuple(contributions)
    return Prediction(
        model_id=record.id,
        model_version=record.version,
        model_type=record.model_type,
        task=record.task,
        task_description=trained.task.description,
        kind=trained.task.kind,
        patient_id=patient_id,
        value=value,
        factors=factors,
        basis=tuple(used),
        occurrence=at,
    )


def prefetch_templates(task: Task) -> dict[str, str]:
    """The prefetch templates of the task's CDS service: the patient, and a search by
    `patient` (an R4 search parameter of each of these types) per type its features read."""
    needed = {
        "Condition": bool(task.conditions),
        "Observation": bool(task.observations),
        "MedicationRequest": bool(task.medications),
        "Encounter": bool(task.encounters or task.index_encounter)
        or task.index.type == "encounter_end",
    }
    templates = {"patient": "Patient/{{context.patientId}}"}
    for type_ in PREFETCH_TYPES:
        if needed[type_]:
            key = type_[0].lower() + type_[1:] + "s"
            templates[key] = f"{type_}?patient={{{{context.patientId}}}}"
    return templates


def discovery(services: Iterable[tuple[ModelRecord, Task]]) -> dict[str, Any]:
    """The CDS Hooks discovery document: one patient-view service per active task."""
    entries = []
    for record, task in services:
        entries.append(
            {
                "hook": "patient-view",
                "id": task.name,
                "title": f"carebase risk: {task.name}",
                "description": f"{task.description} (model {record.id}, {record.model_type}; "
                "the task's active model answers)",
                "prefetch": prefetch_templates(task),
                "usageRequirements": "Send a bearer access token that may read the "
                "patient's record when not every prefetch key is given.",
            }
        )
    return {"services": entries}


def prefetched_resources(
    prefetch: dict[str, Any] | None, templates: dict[str, str], patient_id: str
) -> list[dict[str, Any]] | None:
    """The resources of a request's prefetch, when it answers every template (a null value
    is an answer: nothing found); None when a template is unanswered (fetch instead).
    400 when the prefetched Patient is not the context's patient."""
    if not prefetch or any(key not in prefetch for key in templates):
        return None
    resources: list[dict[str, Any]] = []
    for key, value in prefetch.items():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                item = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(item, dict) and item.get("resourceType") != "OperationOutcome":
                    resources.append(item)
        else:
            resources.append(value)
        if value.get("resourceType") == "Patient" and value.get("id") != patient_id:
            raise BadRequest(
                f"prefetch {key} is Patient/{value.get('id')}, not the context's patient "
                f"{patient_id}",
                location=f"prefetch.{key}",
            )
    if not any(r.get("resourceType") == "Patient" for r in resources):
        return None  # the patient itself is needed (age, sex): read it
    return resources


def indicator(prediction: Prediction) -> str:
    """info, warning or critical, from the predicted probability (regression: info)."""
    if prediction.kind != "classification":
        return "info"
    if prediction.value >= CRITICAL_AT:
        return "critical"
    return "warning" if prediction.value >= WARNING_AT else "info"


def cards(prediction: Prediction, card_url: str) -> dict[str, Any]:
    """The CDS Hooks response for `prediction`: one card with the risk, the top factors
    and a link to the model card."""
    factors = describe_factors(prediction.factors, scale=scale_of(prediction.kind))
    detail = "Top contributing factors:\n" + "\n".join(f"- {f}" for f in factors)
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": headline(prediction)[:139],
        "indicator": indicator(prediction),
        "detail": detail + f"\n\nModel {prediction.model_id} ({prediction.model_type}); "
        "a prediction to support, not replace, clinical judgement.",
        "source": {"label": f"carebase model {prediction.model_id}", "url": card_url},
        "links": [{"label": "Model card", "url": card_url, "type": "absolute"}],
    }
    return {"cards": [card]}
