"""FHIR resources for what happens at visits: Encounter, Condition, Observation,
MedicationRequest, Immunization, Procedure and AllergyIntolerance, built from a Timeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from carebase.data.synthetic.codes import (
    ACT_CODE,
    ADMIT_SOURCE,
    ALLERGIES,
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    BP_PANEL,
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    CVX,
    DISCHARGE_DISPOSITION,
    DRUGS,
    ENCOUNTER_TYPES,
    INTERPRETATION,
    LOINC,
    MEASURES,
    OBSERVATION_CATEGORY,
    PROBLEMS,
    PROCEDURES,
    RXNORM,
    SMOKING_ANSWERS,
    SMOKING_STATUS,
    SNOMED,
    UCUM,
    VACCINES,
    Measure,
)
from carebase.data.synthetic.fhir_people import (
    Ids,
    Resource,
    coding,
    concept,
    instant,
    problem_concept,
    synthetic_meta,
)
from carebase.data.synthetic.timeline import Timeline, Visit

ENCOUNTER_CLASS = {
    "checkup": ("AMB", "ambulatory"),
    "followup": ("AMB", "ambulatory"),
    "emergency": ("EMER", "emergency"),
    "inpatient": ("IMP", "inpatient encounter"),
}
INTERPRETATIONS = {"H": "High", "L": "Low", "N": "Normal"}
# Problems with one Condition per patient; the rest (acute reasons) get one per visit.
LASTING_PROBLEMS = frozenset(
    (
        "prediabetes",
        "t2d",
        "hypertension",
        "ckd",
        "hyperlipidemia",
        "obesity",
        "family_history_diabetes",
    )
)
ACUTE_COURSE_DAYS = 14  # acute problems are recorded as resolved this long after the visit


class ClinicalBuilder:
    """Builds one patient's clinical resources; ids are stable per (patient, visit, item)."""

    def __init__(self, ids: Ids, timeline: Timeline) -> None:
        self.ids = ids
        self.t = timeline
        self.n = timeline.number
        self.patient_ref = ids.ref("Patient", timeline.number)
        self._encounter = (-1, "")

    def _base(self, type_: str, *parts: object) -> Resource:
        return {
            "resourceType": type_,
            "id": self.ids.of(type_, self.n, *parts),
            "meta": synthetic_meta(),
        }

    def _encounter_ref(self, index: int) -> dict[str, str]:
        if self._encounter[0] != index:  # asked for many times per visit: computed once
            self._encounter = (index, f"Encounter/{self.ids.of('Encounter', self.n, index)}")
        return {"reference": self._encounter[1]}

    def condition_id(self, problem: str, index: int) -> str:
        """Chronic problems have one Condition per patient; acute ones one per visit."""
        if problem in LASTING_PROBLEMS:
            return self.ids.of("Condition", self.n, problem)
        return self.ids.of("Condition", self.n, index, problem)

    # --- resources ------------------------------------------------------------------------
    def encounter(self, index: int, visit: Visit) -> Resource:
        """The Encounter of one visit."""
        code, display = ENCOUNTER_CLASS[visit.kind]
        resource = self._base("Encounter", index)
        resource.update(
            {
                "status": "finished",
                "class": coding(ACT_CODE, code, display),
                "type": [concept(SNOMED, *ENCOUNTER_TYPES[visit.kind])],
                "subject": self.patient_ref,
                "participant": [{"individual": self.ids.ref("Practitioner", visit.clinician)}],
                "period": {"start": instant(visit.start), "end": instant(visit.end)},
            }
        )
        if visit.reason:
            resource["reasonCode"] = [problem_concept(PROBLEMS[visit.reason])]
        if visit.kind == "inpatient":
            disposition = ("exp", "Expired") if visit.died else ("home", "Home")
            resource["hospitalization"] = {
                "admitSource": concept(ADMIT_SOURCE, "emd", "From accident/emergency department"),
                "dischargeDisposition": concept(DISCHARGE_DISPOSITION, *disposition),
            }
        resource["serviceProvider"] = self.ids.ref("Organization", visit.site)
        return resource

    def conditions(self, index: int, visit: Visit) -> Iterator[Resource]:
        """Conditions first recorded at this visit."""
        for problem in visit.diagnoses:
            chronic = problem in LASTING_PROBLEMS
            onset = self.t.onsets.get(problem)
            resource: Resource = {
                "resourceType": "Condition",
                "id": self.condition_id(problem, index),
                "meta": synthetic_meta(),
            }
            status = "active" if chronic else "resolved"
            resource.update(
                {
                    "clinicalStatus": concept(CONDITION_CLINICAL, status, status.capitalize()),
                    "verificationStatus": concept(CONDITION_VERIFICATION, "confirmed", "Confirmed"),
                    "category": [
                        concept(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
                        if chronic
                        else concept(
                            CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis"
                        )
                    ],
                    "code": problem_concept(PROBLEMS[problem]),
                    "subject": self.patient_ref,
                    "encounter": self._encounter_ref(index),
                    "onsetDateTime": onset.isoformat() if onset else instant(visit.start),
                }
            )
            if not chronic:
                ends = visit.end + timedelta(days=ACUTE_COURSE_DAYS)
                if self.t.death is None or ends < self.t.death:
                    resource["abatementDateTime"] = instant(ends)
                else:
                    resource["clinicalStatus"] = concept(CONDITION_CLINICAL, "active", "Active")
            resource["recordedDate"] = instant(visit.start)
            resource["recorder"] = self.ids.ref("Practitioner", visit.clinician)
            yield resource

    def _quantity(self, measure: Measure, value: float) -> dict[str, Any]:
        shown: float | int = int(value) if measure.decimals == 0 else value
        return {"value": shown, "unit": measure.unit, "system": UCUM, "code": measure.ucum}

    def _range_and_flag(self, measure: Measure, value: float) -> dict[str, Any]:
        if measure.low is None and measure.high is None:
            return {}
        reference: dict[str, Any] = {}
        if measure.low is not None:
            reference["low"] = self._quantity(measure, measure.low)
        if measure.high is not None:
            reference["high"] = self._quantity(measure, measure.high)
        flag = "N"
        if measure.high is not None and value > measure.high:
            flag = "H"
        elif measure.low is not None and value < measure.low:
            flag = "L"
        return {
            "interpretation": [concept(INTERPRETATION, flag, INTERPRETATIONS[flag])],
            "referenceRange": [reference],
        }

    def _observation(self, index: int, key: str, category: str) -> Resource:
        resource = self._base("Observation", index, key)
        resource.update(
            {
                "status": "final",
                "category": [
                    concept(OBSERVATION_CATEGORY, category, category.replace("-", " ").capitalize())
                ],
            }
        )
        return resource

    def observations(self, index: int, visit: Visit) -> Iterator[Resource]:
        """Vital signs (blood pressure as one panel) and laboratory results of the visit."""
        common = {"subject": self.patient_ref, "encounter": self._encounter_ref(index)}
        taken = instant(visit.start + timedelta(minutes=5))
        if "sbp" in visit.vitals:
            panel = self._observation(index, "bp", "vital-signs")
            panel["code"] = concept(LOINC, *BP_PANEL)
            panel.update(common)
            panel["effectiveDateTime"] = taken
            panel["component"] = [
                {
                    "code": concept(LOINC, MEASURES[k].loinc, MEASURES[k].display),
                    "valueQuantity": self._quantity(MEASURES[k], visit.vitals[k]),
                    **self._range_and_flag(MEASURES[k], visit.vitals[k]),
                }
                for k in ("sbp", "dbp")
            ]
            yield panel
        resulted = instant(visit.start + timedelta(hours=6 if visit.kind != "inpatient" else 2))
        for key, value in (*visit.vitals.items(), *visit.labs.items()):
            if key in ("sbp", "dbp"):
                continue
            measure = MEASURES[key]
            resource = self._observation(index, key, measure.category)
            resource["code"] = concept(LOINC, measure.loinc, measure.display)
            resource.update(common)
            laboratory = measure.category == "laboratory"
            resource["effectiveDateTime"] = (
                instant(visit.start + timedelta(minutes=20)) if laboratory else taken
            )
            if laboratory:
                resource["issued"] = resulted
            resource["valueQuantity"] = self._quantity(measure, value)
            resource.update(self._range_and_flag(measure, value))
            yield resource

    def smoking_status(self, index: int, visit: Visit) -> Resource:
        """The tobacco smoking status recorded at the first visit."""
        resource = self._observation(index, "smoking", "social-history")
        resource.update(
            {
                "code": concept(LOINC, *SMOKING_STATUS),
                "subject": self.patient_ref,
                "encounter": self._encounter_ref(index),
                "effectiveDateTime": instant(visit.start),
                "valueCodeableConcept": concept(SNOMED, *SMOKING_ANSWERS[self.t.smoking]),
            }
        )
        return resource

    def medication_requests(self, index: int, visit: Visit) -> Iterator[Resource]:
        """Prescriptions written at the visit, each citing the Condition it treats."""
        for drug_key, problem in visit.prescriptions:
            drug = DRUGS[drug_key]
            chronic = drug_key != "amoxicillin"
            status = "completed" if not chronic else ("stopped" if self.t.death else "active")
            resource = self._base("MedicationRequest", index, drug_key)
            resource.update(
                {
                    "status": status,
                    "intent": "order",
                    "medicationCodeableConcept": concept(RXNORM, drug.rxnorm, drug.display),
                    "subject": self.patient_ref,
                    "encounter": self._encounter_ref(index),
                    "authoredOn": instant(visit.start + timedelta(minutes=10)),
                    "requester": self.ids.ref("Practitioner", visit.clinician),
                    "reasonReference": [
                        {"reference": f"Condition/{self.condition_id(problem, index)}"}
                    ],
                    "dosageInstruction": [{"text": drug.dosage}],
                }
            )
            yield resource

    def immunizations(self, index: int, visit: Visit) -> Iterator[Resource]:
        """Vaccines given at the visit (CVX)."""
        for vaccine in visit.vaccines:
            resource = self._base("Immunization", index, vaccine)
            resource.update(
                {
                    "status": "completed",
                    "vaccineCode": concept(CVX, *VACCINES[vaccine]),
                    "patient": self.patient_ref,
                    "encounter": self._encounter_ref(index),
                    "occurrenceDateTime": instant(visit.start + timedelta(minutes=12)),
                    "primarySource": True,
                    "performer": [{"actor": self.ids.ref("Practitioner", visit.clinician)}],
                }
            )
            yield resource

    def procedures(self, index: int, visit: Visit) -> Iterator[Resource]:
        """Procedures done at the visit (SNOMED CT)."""
        for procedure in visit.procedures:
            resource = self._base("Procedure", index, procedure)
            start = visit.start + timedelta(minutes=30)
            resource.update(
                {
                    "status": "completed",
                    "code": concept(SNOMED, *PROCEDURES[procedure]),
                    "subject": self.patient_ref,
                    "encounter": self._encounter_ref(index),
                    "performedPeriod": {
                        "start": instant(min(start, visit.end)),
                        "end": instant(visit.end),
                    },
                    "performer": [{"actor": self.ids.ref("Practitioner", visit.clinician)}],
                }
            )
            if visit.reason in visit.diagnoses:
                resource["reasonReference"] = [
                    {"reference": f"Condition/{self.condition_id(visit.reason, index)}"}
                ]
            yield resource

    def allergies(self, index: int, visit: Visit) -> Iterator[Resource]:
        """The patient's allergies, recorded at the first visit."""
        for allergy in self.t.allergies:
            code, display, category, _share = ALLERGIES[allergy]
            resource = self._base("AllergyIntolerance", code)
            resource.update(
                {
                    "clinicalStatus": concept(ALLERGY_CLINICAL, "active", "Active"),
                    "verificationStatus": concept(ALLERGY_VERIFICATION, "confirmed", "Confirmed"),
                    "type": "allergy",
                    "category": [category],
                    "criticality": "low",
                    "code": concept(SNOMED, code, display),
                    "patient": self.patient_ref,
                    "encounter": self._encounter_ref(index),
                    "recordedDate": instant(visit.start),
                    "recorder": self.ids.ref("Practitioner", visit.clinician),
                }
            )
            yield resource
