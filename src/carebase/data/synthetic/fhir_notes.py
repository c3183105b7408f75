"""Clinical notes: a short, readable text/plain note per visit, as a DocumentReference whose
attachment carries the text base64-encoded (as EHR exports and Bulk Data do)."""

from __future__ import annotations

import base64
from datetime import date, timedelta

from carebase.data.synthetic.codes import DRUGS, LOINC, NOTE_TYPES, PROBLEMS, PROCEDURES, VACCINES
from carebase.data.synthetic.fhir_people import Ids, Resource, concept, instant, synthetic_meta
from carebase.data.synthetic.timeline import Timeline, Visit

US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
OPENINGS = {
    "checkup": "Routine check-up",
    "followup": "Follow-up visit",
    "emergency": "Emergency department visit",
    "inpatient": "Hospital admission",
}


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def note_text(timeline: Timeline, visit: Visit) -> str:
    """The note a clinician might have written: who, why, findings, assessment and plan."""
    person = timeline.person
    who = "woman" if person.sex == "female" else "man"
    day = visit.start.date()
    lines = [f"{OPENINGS[visit.kind]} on {day.isoformat()}."]
    reason = (
        f" presenting with {PROBLEMS[visit.reason].snomed_display.lower()}" if visit.reason else ""
    )
    lines.append(f"{_age(person.birth_date, day)}-year-old {who}{reason}.")
    v = visit.vitals
    if v:
        lines.append(
            f"BP {v['sbp']:.0f}/{v['dbp']:.0f} mmHg, heart rate {v['heart_rate']:.0f}/min, "
            f"weight {v['weight']} kg, BMI {v['bmi']} kg/m2."
        )
    labs = visit.labs
    results = []
    if "hba1c" in labs:
        results.append(f"HbA1c {labs['hba1c']} %, fasting glucose {labs['glucose']:.0f} mg/dL")
    if "egfr" in labs:
        results.append(f"creatinine {labs['creatinine']} mg/dL, eGFR {labs['egfr']:.0f}")
    if "ldl" in labs:
        results.append(f"LDL {labs['ldl']:.0f} mg/dL")
    if results:
        lines.append("Labs: " + "; ".join(results) + ".")
    if visit.diagnoses:
        assessed = ", ".join(PROBLEMS[p].snomed_display.lower() for p in visit.diagnoses)
        lines.append(f"Assessment: {assessed}.")
    plan = [f"start {DRUGS[d].display}" for d, _ in visit.prescriptions]
    plan += [f"{PROCEDURES[p][1].lower()} done" for p in visit.procedures]
    plan += [f"{VACCINES[k][1]} vaccine given" for k in visit.vaccines]
    if visit.kind == "inpatient":
        days = max(1, (visit.end - visit.start).days)
        plan.append(
            "patient died in hospital" if visit.died else f"discharged home after {days} days"
        )
    if plan:
        lines.append("Plan: " + "; ".join(plan) + ".")
    return "\n".join(lines) + "\n"


def document_reference(ids: Ids, timeline: Timeline, index: int, visit: Visit) -> Resource:
    """The visit's note."""
    kind = {"inpatient": "discharge", "emergency": "emergency"}.get(visit.kind, "progress")
    code, display = NOTE_TYPES[kind]
    text = note_text(timeline, visit)
    written = visit.end if visit.kind != "checkup" else visit.end + timedelta(minutes=5)
    if timeline.death is not None:  # nobody writes in the name of a visit after the death
        written = min(written, timeline.death)
    return {
        "resourceType": "DocumentReference",
        "id": ids.of("DocumentReference", timeline.number, index),
        "meta": synthetic_meta(),
        "status": "current",
        "docStatus": "final",
        "type": concept(LOINC, code, display),
        "category": [concept(US_CORE_CATEGORY, "clinical-note", "Clinical Note")],
        "subject": ids.ref("Patient", timeline.number),
        "date": instant(written),
        "author": [ids.ref("Practitioner", visit.clinician)],
        "custodian": ids.ref("Organization", visit.site),
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "language": "en-US",
                    "data": base64.b64encode(text.encode()).decode("ascii"),
                    "title": display,
                    "creation": instant(written),
                }
            }
        ],
        "context": {
            "encounter": [ids.ref("Encounter", timeline.number, index)],
            "period": {"start": instant(visit.start), "end": instant(visit.end)},
        },
    }
