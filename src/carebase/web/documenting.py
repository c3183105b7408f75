"""FHIR resources from the clinician's forms, with the checks a form makes before writing.

Each builder takes the posted fields and returns the resource, or raises `FormErrors`
naming every field that is wrong (the page shows them beside the fields; nothing is
written). Codes: LOINC for observations and note types, UCUM units, ICD-10-CM problems,
RxNorm-coded or free-text medications, LOINC-coded lab orders.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from markupsafe import escape

from carebase.web.i18n import N_, Text
from carebase.web.vitals import BP_PANEL, BY_FIELD, LOINC, UCUM, VITALS, Vital

Resource = dict[str, Any]
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MRN_SYSTEM = "urn:carebase:mrn"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
#: The SOAP note's document type (LOINC Progress note) and its sections.
PROGRESS_NOTE = ("11506-3", "Progress note")
SOAP_SECTIONS = (
    ("subjective", "Subjective"),
    ("objective", "Objective"),
    ("assessment", "Assessment"),
    ("plan", "Plan"),
)
#: Encounter classes a clinician can start.
ENCOUNTER_CLASSES = {
    "AMB": "ambulatory",
    "EMER": "emergency",
    "IMP": "inpatient encounter",
    "VR": "virtual",
}
GENDERS = ("female", "male", "other", "unknown")
_MAX_TEXT = 10_000
_ICD10_RE = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-TV-Z]{1,4})?$")


class FormErrors(Exception):
    """The fields of a form that are wrong: {field: message (English; pages translate)}."""

    def __init__(self, errors: dict[str, Text]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Author:
    """Who writes: the user's FHIR identity (Practitioner/x) and display name."""

    reference: str | None
    display: str

    def ref(self) -> dict[str, str]:
        out = {"display": self.display}
        if self.reference:
            out["reference"] = self.reference
        return out


def now_instant() -> str:
    """The current time as a FHIR instant (seconds, UTC)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _text(
    form: dict[str, str],
    name: str,
    errors: dict[str, Text],
    *,
    required: bool = True,
    limit: int = _MAX_TEXT,
) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        errors[name] = N_("This field is required")
    elif len(value) > limit:
        errors[name] = N_("At most {limit} characters", limit=limit)
    return value


def _encounter_ref(form: dict[str, str]) -> dict[str, str] | None:
    encounter = form.get("encounter", "").strip()
    return {"reference": f"Encounter/{encounter}"} if encounter else None


def encounter(patient_id: str, form: dict[str, str], author: Author) -> Resource:
    """An in-progress Encounter starting now."""
    errors: dict[str, Text] = {}
    kind = form.get("class", "AMB")
    if kind not in ENCOUNTER_CLASSES:
        errors["class"] = N_("Choose the kind of encounter")
    reason = _text(form, "reason", errors, required=False, limit=500)
    if errors:
        raise FormErrors(errors)
    resource: Resource = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": ACT_CODE, "code": kind, "display": ENCOUNTER_CLASSES[kind]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": now_instant()},
    }
    if author.reference:
        resource["participant"] = [{"individual": author.ref()}]
    if reason:
        resource["reasonCode"] = [{"text": reason}]
    return resource


def _number(raw: str, vital: Vital, errors: dict[str, Text]) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw.strip().replace(",", "."))
    except ValueError:
        errors[vital.field] = N_("Enter a number")
        return None
    low, high = vital.plausible
    if not low <= value <= high:
        errors[vital.field] = N_(
            "{value} {unit} is not plausible (expected {low}-{high})",
            value=f"{value:g}",
            unit=vital.unit_display,
            low=f"{low:g}",
            high=f"{high:g}",
        )
        return None
    return round(value, vital.decimals) if vital.decimals else float(round(value))


def _quantity(value: float, vital: Vital) -> Resource:
    return {
        "value": int(value) if vital.decimals == 0 else value,
        "unit": vital.unit_display,
        "system": UCUM,
        "code": vital.unit,
    }


def _range(vital: Vital) -> list[Resource]:
    low, high = vital.normal
    if low is None and high is None:
        return []
    item: Resource = {}
    if low is not None:
        item["low"] = {"value": low, "unit": vital.unit_display, "system": UCUM, "code": vital.unit}
    if high is not None:
        item["high"] = {
            "value": high,
            "unit": vital.unit_display,
            "system": UCUM,
            "code": vital.unit,
        }
    return [item]


def _coded(vital: Vital) -> Resource:
    return {
        "coding": [{"system": LOINC, "code": vital.loinc, "display": vital.display}],
        "text": vital.display,
    }


def vital_signs(patient_id: str, form: dict[str, str], author: Author) -> list[Resource]:
    """The Observations of a vital signs form: a blood pressure panel (systolic and
    diastolic together) and one Observation per other value entered; at least one value."""
    errors: dict[str, Text] = {}
    values = {v.field: _number(form.get(v.field, ""), v, errors) for v in VITALS}
    systolic, diastolic = values["systolic"], values["diastolic"]
    if (systolic is None) != (diastolic is None) and not {"systolic", "diastolic"} & errors.keys():
        errors["systolic" if systolic is None else "diastolic"] = N_(
            "Enter both blood pressure values"
        )
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        errors["diastolic"] = N_("Diastolic must be lower than systolic")
    if not errors and all(v is None for v in values.values()):
        errors["systolic"] = N_("Enter at least one value")
    if errors:
        raise FormErrors(errors)
    when = now_instant()
    base: Resource = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": OBSERVATION_CATEGORY,
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "issued": when,
    }
    if author.reference:
        base["performer"] = [author.ref()]
    encounter_ref = _encounter_ref(form)
    if encounter_ref:
        base["encounter"] = encounter_ref
    out: list[Resource] = []
    if systolic is not None and diastolic is not None:
        panel = {
            **base,
            "code": {
                "coding": [{"system": LOINC, "code": BP_PANEL[0], "display": BP_PANEL[1]}],
                "text": "Blood pressure",
            },
        }
        panel["component"] = [
            {
                "code": _coded(BY_FIELD[f]),
                "valueQuantity": _quantity(v, BY_FIELD[f]),
                **({"referenceRange": r} if (r := _range(BY_FIELD[f])) else {}),
            }
            for f, v in (("systolic", systolic), ("diastolic", diastolic))
        ]
        out.append(panel)
    for vital in VITALS:
        value = values[vital.field]
        if value is None or vital.field in ("systolic", "diastolic"):
            continue
        obs = {**base, "code": _coded(vital), "valueQuantity": _quantity(value, vital)}
        if reference := _range(vital):
            obs["referenceRange"] = reference
        out.append(obs)
    return out


def problem(patient_id: str, form: dict[str, str], author: Author, display: str | None) -> Resource:
    """An active problem-list Condition coded in ICD-10-CM (`display` is the code's title
    from the terminology; None when the code is not in it)."""
    errors: dict[str, Text] = {}
    code = form.get("code", "").strip().upper()
    if not _ICD10_RE.match(code):
        errors["code"] = N_("Enter an ICD-10-CM code such as E11.9 (search by name above)")
    elif display is None:
        errors["code"] = N_("{code} is not an ICD-10-CM code", code=code)
    onset = form.get("onset", "").strip()
    if onset:
        try:
            if date.fromisoformat(onset) > date.today():
                errors["onset"] = N_("The onset cannot be in the future")
        except ValueError:
            errors["onset"] = N_("Enter a date as YYYY-MM-DD")
    note = _text(form, "note", errors, required=False, limit=2000)
    if errors:
        raise FormErrors(errors)
    resource: Resource = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
        "category": [
            {
                "coding": [
                    {
                        "system": CONDITION_CATEGORY,
                        "code": "problem-list-item",
                        "display": "Problem List Item",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": ICD10CM, "code": code, "display": display}],
            "text": display,
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "recordedDate": now_instant(),
        "recorder": author.ref(),
    }
    if onset:
        resource["onsetDateTime"] = onset
    if note:
        resource["note"] = [{"text": note}]
    if encounter_ref := _encounter_ref(form):
        resource["encounter"] = encounter_ref
    return resource


def resolved(condition: Resource) -> Resource:
    """The Condition marked resolved today (the update keeps everything else)."""
    updated = dict(condition)
    updated["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved"}]}
    updated["abatementDateTime"] = now_instant()
    updated.pop("meta", None)
    return updated


def soap_note(patient_id: str, form: dict[str, str], author: Author) -> Resource:
    """A SOAP progress note: a DocumentReference whose plain-text attachment holds the four
    sections (and whose narrative shows them), authored by the user."""
    errors: dict[str, Text] = {}
    sections = [(label, _text(form, name, errors, required=False)) for name, label in SOAP_SECTIONS]
    if not errors and not any(text for _, text in sections):
        errors["subjective"] = N_("Write at least one section")
    if errors:
        raise FormErrors(errors)
    written = [(label, text) for label, text in sections if text]
    plain = "\n\n".join(f"{label}:\n{text}" for label, text in written) + "\n"
    div = "".join(f"<h3>{escape(label)}</h3><p>{escape(text)}</p>" for label, text in written)
    when = now_instant()
    resource: Resource = {
        "resourceType": "DocumentReference",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{div}</div>',
        },
        "status": "current",
        "docStatus": "final",
        "type": {
            "coding": [{"system": LOINC, "code": PROGRESS_NOTE[0], "display": PROGRESS_NOTE[1]}],
            "text": "SOAP note",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": when,
        "author": [author.ref()],
        "description": "SOAP note",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(plain.encode()).decode("ascii"),
                    "title": "SOAP note",
                    "creation": when,
                }
            }
        ],
    }
    if encounter_ref := _encounter_ref(form):
        resource["context"] = {"encounter": [encounter_ref]}
    return resource


def prescription(patient_id: str, form: dict[str, str], author: Author) -> Resource:
    """An active order MedicationRequest: the medication (RxNorm code optional), the
    dosage instructions, and optionally quantity and refills."""
    errors: dict[str, Text] = {}
    medication = _text(form, "medication", errors, limit=300)
    rxnorm = form.get("rxnorm", "").strip()
    if rxnorm and not rxnorm.isdigit():
        errors["rxnorm"] = N_("An RxNorm code is digits only")
    dosage = _text(form, "dosage", errors, limit=1000)
    refills_raw = form.get("refills", "").strip()
    refills = 0
    if refills_raw:
        if not refills_raw.isdigit() or int(refills_raw) > 12:
            errors["refills"] = N_("Enter 0 to 12 refills")
        else:
            refills = int(refills_raw)
    if errors:
        raise FormErrors(errors)
    concept: Resource = {"text": medication}
    if rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": medication}]
    resource: Resource = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": now_instant(),
        "requester": author.ref(),
        "dosageInstruction": [{"text": dosage}],
        "dispenseRequest": {"numberOfRepeatsAllowed": refills},
    }
    if encounter_ref := _encounter_ref(form):
        resource["encounter"] = encounter_ref
    return resource


def lab_order(
    patient_id: str, form: dict[str, str], author: Author, tests: dict[str, str]
) -> Resource:
    """A lab test order (ServiceRequest) for one of `tests` (LOINC code -> name)."""
    errors: dict[str, Text] = {}
    code = form.get("test", "").strip()
    if code not in tests:
        errors["test"] = N_("Choose a test")
    priority = form.get("priority", "routine")
    if priority not in ("routine", "urgent", "asap", "stat"):
        errors["priority"] = N_("Choose a priority")
    note = _text(form, "note", errors, required=False, limit=1000)
    if errors:
        raise FormErrors(errors)
    resource: Resource = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": priority,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "108252007",
                        "display": "Laboratory procedure",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": tests[code]}],
            "text": tests[code],
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": now_instant(),
        "requester": author.ref(),
    }
    if note:
        resource["note"] = [{"text": note}]
    if encounter_ref := _encounter_ref(form):
        resource["encounter"] = encounter_ref
    return resource


#: The lab tests the order form offers (LOINC code -> name).
LAB_TESTS: dict[str, str] = {
    "4548-4": "Hemoglobin A1c/Hemoglobin.total in Blood",
    "1558-6": "Fasting glucose [Mass/volume] in Serum or Plasma",
    "2160-0": "Creatinine [Mass/volume] in Serum or Plasma",
    "24323-8": "Comprehensive metabolic 2000 panel - Serum or Plasma",
    "57698-3": "Lipid panel with direct LDL - Serum or Plasma",
    "58410-2": "CBC panel - Blood by Automated count",
    "3016-3": "Thyrotropin [Units/volume] in Serum or Plasma",
    "5811-5": "Specific gravity of Urine by Test strip",
}


def new_patient(form: dict[str, str], organization: str | None, mrn: str) -> Resource:
    """A Patient from the registration form (managed by the registering user's organisation)."""
    errors: dict[str, Text] = {}
    family = _text(form, "family", errors, limit=100)
    given = _text(form, "given", errors, limit=100)
    birth = form.get("birth_date", "").strip()
    try:
        born = date.fromisoformat(birth)
        if born > date.today():
            errors["birth_date"] = N_("The birth date cannot be in the future")
        elif born.year < 1880:
            errors["birth_date"] = N_("Check the year of birth")
    except ValueError:
        errors["birth_date"] = N_("Enter a date as YYYY-MM-DD")
    gender = form.get("gender", "")
    if gender not in GENDERS:
        errors["gender"] = N_("Choose one")
    phone = _text(form, "phone", errors, required=False, limit=40)
    if errors:
        raise FormErrors(errors)
    resource: Resource = {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "usual",
                "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "MR"}], "text": "MRN"},
                "system": MRN_SYSTEM,
                "value": mrn,
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": given.split()}],
        "gender": gender,
        "birthDate": birth,
    }
    if phone:
        resource["telecom"] = [{"system": "phone", "value": phone}]
    if organization:
        resource["managingOrganization"] = {"reference": f"Organization/{organization}"}
    return resource
