"""The patient chart's content, read through the user's `Records` (blocking).

Every list is one indexed, sorted and limited search, so the chart costs about the same for
a patient with ten observations as for one with ten thousand: the latest vital signs and
the recent labs (each one search, which the trends are drawn from too: the points of each
charted code within the latest VITALS_WINDOW vital signs or LABS_WINDOW lab results), the
encounters timeline (with its total), notes, problems, medications, allergies,
immunizations and the risk flags of stored RiskAssessments. Sections the user's role may
not read are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup

from carebase.web import fhir_view as fv
from carebase.web.narrative import document_text
from carebase.web.records import Records, Resource
from carebase.web.svg_chart import Series, trend_svg
from carebase.web.vitals import BP_PANEL, BY_LOINC, LABORATORY_CATEGORY, LOINC, VITAL_SIGNS_CATEGORY

#: How many of each list the chart shows (the rest is a page away).
ENCOUNTERS_SHOWN = 20
LABS_SHOWN = 20
NOTES_SHOWN = 5
TREND_POINTS = 60
#: The latest vital signs and lab results the chart reads (latest values, lists and trends
#: all come from these two windows).
VITALS_WINDOW = 300
LABS_WINDOW = 200
#: A stored risk at or above this probability is a flag in the chart header.
RISK_FLAG_AT = 0.2
#: The charted vital signs: (chart id, title, LOINC codes to search, unit).
VITAL_TRENDS = (
    ("bp", "Blood pressure", (BP_PANEL[0], "8480-6", "8462-4"), "mmHg"),
    ("hr", "Heart rate", ("8867-4",), "/min"),
    ("weight", "Body weight", ("29463-7",), "kg"),
)
#: Lab codes charted when the patient has them (the first two found in the recent labs).
LAB_TRENDS_SHOWN = 2


@dataclass(slots=True)
class Row:
    """One line of a chart list: what, its value or status, when, extra detail, flag."""

    label: str
    value: str = ""
    when: str = ""
    detail: str = ""
    flag: str | None = None
    id: str = ""
    version: str = ""


@dataclass(slots=True)
class Trend:
    """One trend chart and its values (for the table beside it)."""

    id: str
    title: str
    unit: str
    svg: Markup
    rows: list[tuple[str, str]]


@dataclass(slots=True)
class Chart:
    """Everything the chart page shows."""

    patient: Resource
    name: str
    age: int | None
    sex: str
    mrn: str | None
    birth_date: str
    allergies: list[Row] = field(default_factory=list)
    risk_flags: list[Row] = field(default_factory=list)
    problems: list[Row] = field(default_factory=list)
    medications: list[Row] = field(default_factory=list)
    vitals: list[Row] = field(default_factory=list)
    labs: list[Row] = field(default_factory=list)
    immunizations: list[Row] = field(default_factory=list)
    encounters: list[Row] = field(default_factory=list)
    encounter_total: int | None = None
    open_encounters: list[Row] = field(default_factory=list)
    notes: list[tuple[Row, Markup]] = field(default_factory=list)
    trends: list[Trend] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)


def header(patient: Resource) -> Chart:
    """The chart's header facts of a Patient."""
    birth = str(patient.get("birthDate") or "")
    return Chart(
        patient=patient,
        name=fv.human_name(patient),
        age=fv.age(birth),
        sex=str(patient.get("gender") or ""),
        mrn=fv.mrn(patient),
        birth_date=birth,
    )


def _version(resource: Resource) -> str:
    return str((resource.get("meta") or {}).get("versionId") or "")


def observation_row(obs: Resource) -> Row:
    """An Observation as a row: name, value, date, reference range, abnormal flag."""
    _, _, range_text = fv.reference_range(obs)
    return Row(
        label=fv.concept_text(obs.get("code")),
        value=fv.observation_value(obs),
        when=fv.short_date(fv.when(obs)),
        detail=range_text,
        flag=fv.flag(obs),
        id=str(obs.get("id") or ""),
        version=_version(obs),
    )


def build_chart(records: Records, patient_id: str) -> Chart:
    """The chart of Patient/`patient_id` as the user may see it (404 when they may not)."""
    chart = header(records.read("Patient", patient_id))
    subject = [("patient", patient_id)]
    may = records.may

    if may("AllergyIntolerance", "s"):
        for item in records.search("AllergyIntolerance", subject, 50):
            status = fv.codes(item.get("clinicalStatus"))
            if status and status[0] in ("inactive", "resolved"):
                continue
            reactions = [
                fv.concept_text(m)
                for r in item.get("reaction") or []
                for m in (r or {}).get("manifestation") or []
            ]
            chart.allergies.append(
                Row(
                    fv.concept_text(item.get("code")),
                    str(item.get("criticality") or ""),
                    detail=", ".join(x for x in reactions if x),
                    id=str(item.get("id")),
                )
            )
    else:
        chart.hidden.append("allergies")
    if may("RiskAssessment", "s"):
        _risk_flags(records, patient_id, chart)
    if may("Condition", "s"):
        params = [*subject, ("clinical-status", "active"), ("_sort", "-recorded-date")]
        for item in records.search("Condition", params, 100):
            chart.problems.append(
                Row(
                    fv.concept_text(item.get("code")),
                    ", ".join(fv.codes(item.get("code"))),
                    fv.short_date(fv.when(item)),
                    id=str(item.get("id")),
                    version=_version(item),
                )
            )
    else:
        chart.hidden.append("problems")
    if may("MedicationRequest", "s"):
        params = [*subject, ("status", "active"), ("_sort", "-authoredon")]
        for item in records.search("MedicationRequest", params, 100):
            dosage = [
                str(d.get("text")) for d in item.get("dosageInstruction") or [] if d.get("text")
            ]
            chart.medications.append(
                Row(
                    fv.concept_text(item.get("medicationCodeableConcept")),
                    "; ".join(dosage),
                    fv.short_date(fv.when(item)),
                    id=str(item.get("id")),
                    version=_version(item),
                )
            )
    else:
        chart.hidden.append("medications")
    if may("Observation", "s"):
        _observations(records, patient_id, chart)
    else:
        chart.hidden.append("observations")
    if may("Immunization", "s"):
        params = [*subject, ("_sort", "-date")]
        for item in records.search("Immunization", params, 20):
            chart.immunizations.append(
                Row(
                    fv.concept_text(item.get("vaccineCode")),
                    str(item.get("status") or ""),
                    fv.short_date(fv.when(item)),
                )
            )
    else:
        chart.hidden.append("immunizations")
    if may("Encounter", "s"):
        found = records.find(
            "Encounter", [*subject, ("_sort", "-date")], count=ENCOUNTERS_SHOWN, counted=True
        )
        chart.encounter_total = found.total
        chart.encounters = [encounter_row(e) for e in found.resources]
        params = [*subject, ("status", "in-progress"), ("_sort", "-date")]
        chart.open_encounters = [encounter_row(e) for e in records.search("Encounter", params, 5)]
    else:
        chart.hidden.append("encounters")
    if may("DocumentReference", "s"):
        params = [*subject, ("_sort", "-date")]
        # notes are the documents with readable text (the documents section lists them all,
        # scans and PDFs too)
        for item in records.search("DocumentReference", params, NOTES_SHOWN * 4):
            text = document_text(item)
            if not text:
                continue
            row = Row(
                fv.concept_text(item.get("type")) or str(item.get("description") or ""),
                when=fv.short_date(fv.when(item)),
                id=str(item.get("id")),
            )
            chart.notes.append((row, text))
            if len(chart.notes) == NOTES_SHOWN:
                break
    else:
        chart.hidden.append("notes")
    return chart


def encounter_row(encounter: Resource) -> Row:
    """An Encounter as a timeline row: type or class, status, start, reason."""
    kinds = [fv.concept_text(t) for t in encounter.get("type") or []]
    label = next((k for k in kinds if k), "") or str(
        (encounter.get("class") or {}).get("display")
        or (encounter.get("class") or {}).get("code")
        or ""
    )
    reasons = [fv.concept_text(r) for r in encounter.get("reasonCode") or []]
    return Row(
        label=label,
        value=str(encounter.get("status") or ""),
        when=fv.short_date(fv.when(encounter)),
        detail=", ".join(r for r in reasons if r),
        id=str(encounter.get("id") or ""),
    )


def _risk_flags(records: Records, patient_id: str, chart: Chart) -> None:
    params = [("subject", f"Patient/{patient_id}"), ("_sort", "-date")]
    seen: set[str] = set()
    for item in records.search("RiskAssessment", params, 10):
        for prediction in item.get("prediction") or []:
            outcome = fv.concept_text(prediction.get("outcome"))
            probability = prediction.get("probabilityDecimal")
            if outcome in seen or not isinstance(probability, int | float):
                continue
            seen.add(outcome)
            if probability >= RISK_FLAG_AT:
                chart.risk_flags.append(
                    Row(outcome, f"{probability:.0%}", fv.short_date(fv.when(item)))
                )


def _observations(records: Records, patient_id: str, chart: Chart) -> None:
    """Latest vital signs, recent labs and the trends, from two searches: the latest
    VITALS_WINDOW vital signs and the latest LABS_WINDOW lab results (one sorted, limited
    search costs about the same whatever its limit, and seven of them cost seven times
    one: measured with bench/bench_web.py)."""
    subject = [("patient", patient_id)]
    params = [*subject, ("category", VITAL_SIGNS_CATEGORY), ("_sort", "-date")]
    vitals = records.search("Observation", params, VITALS_WINDOW)
    latest: dict[str, Row] = {}
    for obs in vitals:
        key = (fv.codes(obs.get("code"), LOINC) or [fv.concept_text(obs.get("code"))])[0]
        if key not in latest:
            latest[key] = observation_row(obs)
    chart.vitals = list(latest.values())
    band: tuple[float | None, float | None]
    for chart_id, title, loincs, unit in VITAL_TRENDS:
        series = _vital_series(vitals, loincs)
        # one series: its normal range as a band (blood pressure has two, so none)
        band = BY_LOINC[loincs[-1]].normal if len(loincs) == 1 else (None, None)
        chart.trends.append(_trend(chart_id, title, unit, series, band))
    params = [*subject, ("category", LABORATORY_CATEGORY), ("_sort", "-date")]
    labs = records.search("Observation", params, LABS_WINDOW)
    chart.labs = [observation_row(o) for o in labs[:LABS_SHOWN]]
    by_code: dict[str, list[Resource]] = {}
    for obs in labs:
        found = fv.codes(obs.get("code"), LOINC)
        if found and fv.numeric_value(obs) is not None:
            by_code.setdefault(found[0], []).append(obs)
    for code, results in list(by_code.items())[:LAB_TRENDS_SHOWN]:
        title = fv.concept_text(results[0].get("code"))
        unit = str((results[0].get("valueQuantity") or {}).get("unit") or "")
        points: list[tuple[datetime, float]] = []
        band = (None, None)
        for obs in results[:TREND_POINTS]:
            moment, value = fv.parse_instant(fv.when(obs)), fv.numeric_value(obs)
            if moment is not None and value is not None:
                points.append((moment, value))
                if band == (None, None):
                    low, high, _ = fv.reference_range(obs)
                    band = (low, high)
        chart.trends.append(_trend(f"lab-{code}", title, unit, [Series(title, points)], band))
    chart.trends = [t for t in chart.trends if t.rows]


def _vital_series(vitals: list[Resource], loincs: tuple[str, ...]) -> list[Series]:
    """The latest points (at most TREND_POINTS) of each of `loincs` among `vitals`: blood
    pressure panels give their systolic and diastolic components."""
    by_code: dict[str, Series] = {}
    wanted = set(loincs)
    for obs in vitals:
        codes = fv.codes(obs.get("code"), LOINC)
        if not codes or codes[0] not in wanted:
            continue
        moment = fv.parse_instant(fv.when(obs))
        if moment is None:
            continue
        parts: list[Any] = [obs, *(obs.get("component") or [])]
        for part in parts:
            value = fv.numeric_value(part)
            code = next(iter(fv.codes(part.get("code"), LOINC)), None)
            if value is None or code not in BY_LOINC:
                continue
            series = by_code.setdefault(code, Series(BY_LOINC[code].display))
            if len(series.points) < TREND_POINTS:
                series.points.append((moment, value))
    return [by_code[c] for c in loincs if c in by_code]


def _trend(
    chart_id: str,
    title: str,
    unit: str,
    series: list[Series],
    band: tuple[float | None, float | None],
) -> Trend:
    rows: list[tuple[str, str]] = []
    if series:
        newest = sorted({t for s in series for t, _ in s.points}, reverse=True)[:10]
        for moment in newest:
            values = [fv.number(v) for s in series for t, v in s.points if t == moment]
            rows.append((moment.isoformat(sep=" ", timespec="minutes"), " / ".join(values)))
    svg = trend_svg(f"trend-{chart_id}", title, unit, series, band)
    return Trend(chart_id, title, unit, svg, rows)
