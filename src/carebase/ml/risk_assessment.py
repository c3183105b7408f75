"""A model's prediction for one patient as a FHIR R4 RiskAssessment (pure: no I/O).

Choices, documented in docs/ml.md:
- `prediction.probabilityDecimal` is the predicted probability on the 0-1 scale (R4's
  invariant ras-2 allows up to 100, so a percentage would also be legal; 0-1 is what a
  model outputs and what CDS clients compute with).
- A regression task (a predicted value, such as the next HbA1c) has no probability: the
  value is in `prediction.outcome.text` and the rationale, and `probabilityDecimal` is left
  out rather than misused.
- `method` names the model: a Coding in `METHOD_SYSTEM` whose code is the model id and whose
  version is the registry version, and a text with task and model type.
- `basis` references the resources that fed a feature; `prediction.rationale` lists the
  factors that moved the prediction most, each with its value and signed contribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

#: The code system of carebase model identifiers (a model id with its registry version).
METHOD_SYSTEM = "urn:carebase:ml-model"
#: Factors named in a rationale or a CDS card.
TOP_FACTORS = 3


class Contributing(Protocol):
    """What a factor must offer (`ml.explain.Contribution` does)."""

    @property
    def feature(self) -> str: ...

    @property
    def value(self) -> object: ...

    @property
    def contribution(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model's output for one patient, with everything a RiskAssessment or card says."""

    model_id: str
    model_version: int
    model_type: str
    task: str
    task_description: str
    kind: str  # classification | regression
    patient_id: str
    value: float  # probability (classification) or predicted value (regression)
    factors: tuple[Contributing, ...]
    basis: tuple[str, ...]  # "Type/id" of the resources that fed a feature
    occurrence: datetime


def show_value(value: object) -> str:
    """A feature value as people read it (missing values say so)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def describe_factors(
    factors: Sequence[Contributing], limit: int = TOP_FACTORS, scale: str = "the prediction"
) -> list[str]:
    """The top `limit` factors as "feature = value (raises the log-odds by x)" phrases;
    `scale` names what contributions add to (log-odds for classifiers, `ml.explain`)."""
    phrases = []
    for factor in factors[:limit]:
        direction = "raises" if factor.contribution > 0 else "lowers"
        phrases.append(
            f"{factor.feature} = {show_value(factor.value)} ({direction} {scale} by "
            f"{abs(factor.contribution):.3g})"
        )
    return phrases


def scale_of(kind: str) -> str:
    """What a contribution is measured in (explanations are on the model's raw scale)."""
    return "the log-odds" if kind == "classification" else "the predicted value"


def headline(prediction: Prediction) -> str:
    """One sentence: the predicted risk or value of the task."""
    if prediction.kind == "classification":
        return f"{prediction.task_description}: predicted risk {prediction.value:.0%}"
    return f"{prediction.task_description}: predicted value {prediction.value:.3g}"


def risk_assessment(prediction: Prediction, *, id_: str | None = None) -> dict[str, Any]:
    """The RiskAssessment resource of `prediction` (status final)."""
    when = prediction.occurrence.astimezone(UTC).isoformat(timespec="seconds")
    factors = describe_factors(prediction.factors, scale=scale_of(prediction.kind))
    rationale = "Top contributing factors: " + ("; ".join(factors) if factors else "none")
    item: dict[str, Any] = {"outcome": {"text": headline(prediction)}, "rationale": rationale}
    if prediction.kind == "classification":
        item["probabilityDecimal"] = round(min(max(float(prediction.value), 0.0), 1.0), 6)
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "code": {"text": prediction.task},
        "subject": {"reference": f"Patient/{prediction.patient_id}"},
        "occurrenceDateTime": when.replace("+00:00", "Z"),
        "method": {
            "coding": [
                {
                    "system": METHOD_SYSTEM,
                    "code": prediction.model_id,
                    "version": str(prediction.model_version),
                    "display": f"{prediction.task} {prediction.model_type} model "
                    f"v{prediction.model_version}",
                }
            ],
            "text": f"carebase model {prediction.model_id} ({prediction.model_type}, task "
            f"{prediction.task}, version {prediction.model_version})",
        },
        "prediction": [item],
    }
    if id_ is not None:
        resource = {"resourceType": "RiskAssessment", "id": id_, **resource}
    if prediction.basis:
        resource["basis"] = [{"reference": ref} for ref in prediction.basis]
    return resource
