"""Reading FHIR resources for display: names, codes, quantities, ranges, flags, dates.

Pure functions of resource JSON; what a value means is never guessed (a missing value shows
as missing, an unknown code by its code).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

Resource = dict[str, Any]
MRN_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
#: Interpretation codes that mark a value as abnormal (high, low, critical, abnormal).
ABNORMAL_CODES = frozenset({"H", "HH", "HU", "L", "LL", "LU", "A", "AA", ">", "<", "POS"})


def human_name(resource: Resource) -> str:
    """The first name of a Patient or Practitioner as written (text, else given family)."""
    for name in resource.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        given = " ".join(str(g) for g in name.get("given") or [])
        text = f"{given} {name.get('family') or ''}".strip()
        if text:
            return text
    return ""


def mrn(patient: Resource) -> str | None:
    """The medical record number: the identifier typed MR, else the first identifier."""
    identifiers = [i for i in patient.get("identifier") or [] if isinstance(i, dict)]
    for identifier in identifiers:
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if (coding.get("system"), coding.get("code")) == MRN_TYPE:
                return str(identifier.get("value") or "") or None
    for identifier in identifiers:
        if identifier.get("value"):
            return str(identifier["value"])
    return None


def age(birth_date: str | None, today: date | None = None) -> int | None:
    """Age in whole years on `today` (None without a full birth date)."""
    if not birth_date or len(birth_date) < 10:
        return None
    try:
        born = date.fromisoformat(birth_date[:10])
    except ValueError:
        return None
    now = today or date.today()
    return now.year - born.year - ((now.month, now.day) < (born.month, born.day))


def concept_text(concept: Any) -> str:
    """A CodeableConcept as people read it: its text, a coding's display, else a code."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    for coding in codings:
        if coding.get("display"):
            return str(coding["display"])
    for coding in codings:
        if coding.get("code"):
            return str(coding["code"])
    return ""


def codes(concept: Any, system: str | None = None) -> list[str]:
    """The codes of a CodeableConcept (of `system` only, when given)."""
    if not isinstance(concept, dict):
        return []
    return [
        str(c["code"])
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("code") and (system is None or c.get("system") == system)
    ]


def number(value: Any) -> str:
    """A decimal without a trailing `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def quantity(q: Any) -> str:
    """A Quantity as "value unit"."""
    if not isinstance(q, dict) or q.get("value") is None:
        return ""
    unit = q.get("unit") or q.get("code") or ""
    comparator = q.get("comparator") or ""
    return f"{comparator}{number(q['value'])} {unit}".strip()


def observation_value(obs: Resource) -> str:
    """The value of an Observation (or of a component) as text."""
    if "valueQuantity" in obs:
        return quantity(obs["valueQuantity"])
    if "valueCodeableConcept" in obs:
        return concept_text(obs["valueCodeableConcept"])
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if key in obs:
            return number(obs[key])
    components = [c for c in obs.get("component") or [] if isinstance(c, dict)]
    if components:
        values = [quantity(c.get("valueQuantity")) for c in components]
        units = {(c.get("valueQuantity") or {}).get("unit") for c in components}
        if len(units) == 1 and all(values):
            unit = units.pop() or ""
            return "/".join(v.removesuffix(unit).strip() for v in values) + f" {unit}"
        return ", ".join(v for v in values if v)
    return ""


def numeric_value(obs: Resource) -> float | None:
    """The numeric valueQuantity.value, or None."""
    value = (obs.get("valueQuantity") or {}).get("value")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def reference_range(obs: Resource) -> tuple[float | None, float | None, str]:
    """(low, high, text) of the first reference range."""
    for item in obs.get("referenceRange") or []:
        if not isinstance(item, dict):
            continue
        low = (item.get("low") or {}).get("value")
        high = (item.get("high") or {}).get("value")
        text = item.get("text") or ""
        if not text and (low is not None or high is not None):
            unit = (item.get("low") or item.get("high") or {}).get("unit") or ""
            if low is not None and high is not None:
                text = f"{number(low)}-{number(high)} {unit}".strip()
            elif low is not None:
                text = f">= {number(low)} {unit}".strip()
            else:
                text = f"<= {number(high)} {unit}".strip()
        return (
            float(low) if isinstance(low, int | float) else None,
            float(high) if isinstance(high, int | float) else None,
            str(text),
        )
    return None, None, ""


def flag(obs: Resource) -> str | None:
    """ "H", "L" (or another abnormal interpretation code) when the result is abnormal: the
    Observation's own interpretation, else its value against its reference range."""
    for concept in obs.get("interpretation") or []:
        for code in codes(concept, INTERPRETATION_SYSTEM):
            if code in ABNORMAL_CODES:
                return code
            if code == "N":
                return None
    value = numeric_value(obs)
    low, high, _ = reference_range(obs)
    if value is None:
        return None
    if high is not None and value > high:
        return "H"
    if low is not None and value < low:
        return "L"
    return None


def when(resource: Resource) -> str:
    """The clinically relevant date-time of a resource (effective, onset, period, authored...)."""
    for key in (
        "effectiveDateTime",
        "occurrenceDateTime",
        "authoredOn",
        "recordedDate",
        "onsetDateTime",
        "date",
        "issued",
        "sent",
    ):
        if resource.get(key):
            return str(resource[key])
    for key in ("effectivePeriod", "period", "onsetPeriod"):
        start = (resource.get(key) or {}).get("start")
        if start:
            return str(start)
    if isinstance(resource.get("start"), str):
        return str(resource["start"])
    return ""


def short_date(value: str) -> str:
    """`2026-03-04T10:00:00+00:00` as `2026-03-04 10:00` (dates as they are)."""
    if len(value) <= 10:
        return value
    return value[:16].replace("T", " ")


def parse_instant(value: str) -> datetime | None:
    """A FHIR date or dateTime as a datetime (dates at midnight), None if not one."""
    if not value:
        return None
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None) if parsed.tzinfo is None else parsed


def reference_id(reference: Any, type_: str) -> str | None:
    """The id in a `{"reference": "Type/id"}` of `type_`."""
    if not isinstance(reference, dict):
        return None
    text = str(reference.get("reference") or "")
    prefix = f"{type_}/"
    return text[len(prefix) :] if text.startswith(prefix) else None
