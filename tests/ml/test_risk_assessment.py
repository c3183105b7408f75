"""RiskAssessment building from plain inputs: valid R4, the documented shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from carebase.fhir.validation import validate_resource
from carebase.ml.risk_assessment import (
    METHOD_SYSTEM,
    Prediction,
    describe_factors,
    risk_assessment,
    show_value,
)


@dataclass(frozen=True)
class Factor:
    feature: str
    value: object
    contribution: float


def _prediction(kind: str = "classification", value: float = 0.37) -> Prediction:
    return Prediction(
        model_id="t2d_onset_3y-v2",
        model_version=2,
        model_type="logistic",
        task="t2d_onset_3y",
        task_description="Type 2 diabetes within 3 years",
        kind=kind,
        patient_id="p1",
        value=value,
        factors=(
            Factor("bmi", 34.2, 0.8),
            Factor("age", 61, 0.3),
            Factor("smoker", False, -0.1),
            Factor("hba1c", float("nan"), 0.05),
        ),
        basis=("Observation/o1", "Condition/c1"),
        occurrence=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    )


def test_classification_is_a_valid_risk_assessment() -> None:
    resource = risk_assessment(_prediction())
    assert [i for i in validate_resource(resource) if i.severity == "error"] == []
    assert resource["status"] == "final"
    assert resource["subject"] == {"reference": "Patient/p1"}
    assert resource["occurrenceDateTime"] == "2026-11-28T12:00:00Z"
    coding = resource["method"]["coding"][0]
    assert (coding["system"], coding["code"], coding["version"]) == (
        METHOD_SYSTEM, "t2d_onset_3y-v2", "2",
    )  # fmt: skip
    assert resource["basis"] == [{"reference": "Observation/o1"}, {"reference": "Condition/c1"}]
    item = resource["prediction"][0]
    assert item["probabilityDecimal"] == 0.37
    assert "37%" in item["outcome"]["text"]
    # the top three factors, largest first, with direction
    assert item["rationale"].startswith("Top contributing factors: bmi = 34.2 (raises the log-odds")
    assert "smoker = no (lowers" in item["rationale"] and "hba1c" not in item["rationale"]


def test_regression_has_no_probability() -> None:
    resource = risk_assessment(_prediction("regression", 7.24))
    assert [i for i in validate_resource(resource) if i.severity == "error"] == []
    item = resource["prediction"][0]
    assert "probabilityDecimal" not in item
    assert "7.24" in item["outcome"]["text"]


def test_probability_is_clamped_and_values_read_well() -> None:
    assert risk_assessment(_prediction(value=1.0000001))["prediction"][0]["probabilityDecimal"] == 1
    assert show_value(float("nan")) == "missing" and show_value(None) == "missing"
    assert show_value(True) == "yes" and show_value(0.123456) == "0.123"
    assert describe_factors([], 3) == []
