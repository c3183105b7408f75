"""FHIRPath value rules over FHIR JSON: equality, ordering, truth, types, boundaries, references."""

from __future__ import annotations

import calendar
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache

from carebase.analytics.view_errors import ViewEvaluationError
from carebase.fhir.definitions.loader import get_definitions

_STRING_TYPES = frozenset(
    {
        "string",
        "code",
        "id",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "markdown",
        "base64binary",
        "date",
        "datetime",
        "instant",
        "time",
        "xhtml",
    }
)
_INTEGER_TYPES = frozenset({"integer", "positiveint", "unsignedint", "integer64"})
_SYSTEM_TYPES = {
    "String": "string",
    "Integer": "integer",
    "Decimal": "decimal",
    "Boolean": "boolean",
    "Date": "date",
    "DateTime": "datetime",
    "Time": "time",
}
_DATE_RE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
_TIME_RE = re.compile(r"\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?")
_REFERENCE_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


@lru_cache(maxsize=1)
def choice_names() -> frozenset[str]:
    """Names of every R4 choice element (`value`, `deceased`, `effective`, ...)."""
    defs = get_definitions()
    names: set[str] = set()
    for type_name in defs.resource_types | {"Extension", "Quantity", "Timing", "Dosage"}:
        for path in defs.elements(type_name):
            if path.endswith("[x]"):
                names.add(path.rsplit(".", 1)[-1][:-3])
    # data types hold choice elements too (Extension.value, UsageContext.value, ...)
    names.update({"value", "defaultValue", "fixed", "pattern", "minValue", "maxValue"})
    return frozenset(names)


def choice_key(name: str, type_name: str) -> str:
    """The JSON key of choice element `name` holding `type_name` (`value`, `Quantity`)."""
    return name + type_name[0].upper() + type_name[1:]


def is_type(item: object, type_spec: str, namespace: str = "") -> bool:
    """Whether a JSON value can be of the FHIR or System type named (no model at hand, so
    strings match every string-like type and objects match any complex type)."""
    if namespace == "System" or (not namespace and type_spec in _SYSTEM_TYPES):
        lowered = _SYSTEM_TYPES.get(type_spec, type_spec.lower())
    else:
        lowered = type_spec.lower()
    if isinstance(item, bool):
        return lowered == "boolean"
    if isinstance(item, int):
        return lowered in _INTEGER_TYPES or lowered == "decimal"
    if isinstance(item, float):
        return lowered == "decimal"
    if isinstance(item, str):
        return lowered in _STRING_TYPES
    if isinstance(item, dict):
        resource_type = item.get("resourceType")
        if resource_type is not None:
            return type_spec in (resource_type, "Resource", "DomainResource")
        return type_spec[:1].isupper() and lowered not in _SYSTEM_TYPES.values()
    return False


def equal(a: object, b: object) -> bool:
    """FHIRPath `=` on two single items (booleans never equal numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def collections_equal(left: list[object], right: list[object]) -> bool:
    """`=` on two non-empty collections: same size and items equal in order."""
    return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right, strict=True))


def equivalent(a: object, b: object) -> bool:
    """FHIRPath `~`: strings compare case- and whitespace-insensitively."""
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return equal(a, b)


def compare(a: object, b: object, location: str) -> int | None:
    """-1/0/1 ordering of two items, None when FHIRPath says the result is empty."""
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        raise ViewEvaluationError(location, "booleans cannot be compared with < or >")
    if isinstance(a, numeric) and isinstance(b, numeric):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        if _looks_temporal(a) and _looks_temporal(b) and _precision(a) != _precision(b):
            return None  # different precisions: FHIRPath leaves the order undefined
        return (a > b) - (a < b)
    raise ViewEvaluationError(
        location, f"cannot compare {type(a).__name__} {a!r} with {type(b).__name__} {b!r}"
    )


def _looks_temporal(text: str) -> bool:
    return bool(text[:4].isdigit() and (len(text) == 4 or text[4] == "-")) or bool(
        len(text) >= 5 and text[2] == ":" and text[:2].isdigit()
    )


def _precision(text: str) -> int:
    core = re.split(r"Z|[+-]\d{2}:\d{2}$", text.split("T", 1)[-1] if "T" in text else text)[0]
    return len(re.findall(r"\d+", text.split("T", 1)[0])) + (
        len(re.findall(r"\d+", core)) if "T" in text else 0
    )


def truth(values: list[object], location: str) -> bool | None:
    """Singleton evaluation as a Boolean: empty -> None; one non-boolean item counts as true."""
    if not values:
        return None
    if len(values) > 1:
        raise ViewEvaluationError(location, f"expected one boolean, got {len(values)} values")
    value = values[0]
    return value if isinstance(value, bool) else True


def reference_key(reference: object, type_name: str | None) -> str | None:
    """The id a Reference points to (the key getResourceKey gives the target), or None when
    it is not a relative/absolute literal reference or points to another type."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    match = _REFERENCE_RE.search(text)
    if match is None:
        return None
    if type_name is not None and match.group(1) != type_name:
        return None
    return match.group(2)


def _decimal_text(value: float | int) -> str:
    text = getattr(value, "text", None)  # FhirDecimal keeps what was written
    return text if isinstance(text, str) else repr(value)


def decimal_boundary(value: float | int, high: bool, precision: int | None) -> float | None:
    """The low/high end of the range a decimal stands for, given its written precision."""
    exact = Decimal(_decimal_text(value))
    exponent = exact.as_tuple().exponent
    digits = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    half = Decimal(5).scaleb(-(digits + 1))
    bound = exact + half if high else exact - half
    if precision is not None and precision <= digits:
        # to fewer digits: the least (greatest) value at that precision, 1.5865 -> 1.58
        step = ROUND_CEILING if high else ROUND_FLOOR
        bound = bound.quantize(Decimal(1).scaleb(-precision), rounding=step)
    return float(bound)


def temporal_boundary(text: str, kind: str, high: bool) -> str | None:
    """The first/last instant a partial date, dateTime or time stands for (`kind` is date,
    dateTime or time); None when `text` is not of that form."""
    if kind == "time":
        if not _TIME_RE.fullmatch(text):
            return None
        return _fill_time(text, high)
    date_part, _, time_part = text.partition("T")
    if not _DATE_RE.fullmatch(date_part):
        return None
    parts = date_part.split("-")
    year = parts[0]
    month = parts[1] if len(parts) > 1 else ("12" if high else "01")
    if len(parts) > 2:
        day = parts[2]
    else:
        day = f"{calendar.monthrange(int(year), int(month))[1]:02d}" if high else "01"
    date_text = f"{year}-{month}-{day}"
    if kind == "date":
        return date_text
    zone = ""
    zone_match = re.search(r"(Z|[+-]\d{2}:\d{2})$", time_part)
    if zone_match:
        zone = zone_match.group(1)
        time_part = time_part[: zone_match.start()]
    if not zone:
        # no zone written: the widest range runs from +14:00 to -12:00
        zone = "-12:00" if high else "+14:00"
    return f"{date_text}T{_fill_time(time_part, high)}{zone}"


def _fill_time(text: str, high: bool) -> str:
    pieces = text.split(":") if text else []
    hour = pieces[0] if pieces else ("23" if high else "00")
    minute = pieces[1] if len(pieces) > 1 else ("59" if high else "00")
    second = pieces[2] if len(pieces) > 2 else ("59" if high else "00")
    if "." in second:
        whole, _, fraction = second.partition(".")
        fraction = (fraction + ("9" if high else "0") * 3)[:3]
    else:
        whole, fraction = second, "999" if high else "000"
    return f"{hour}:{minute}:{whole}.{fraction}"


def guess_temporal_kind(text: str) -> str | None:
    """date, dateTime or time for a string by its shape (when no type is known)."""
    if "T" in text:
        return "dateTime"
    if _DATE_RE.fullmatch(text):
        return "date"
    if _TIME_RE.fullmatch(text) and ":" in text:
        return "time"
    return None
