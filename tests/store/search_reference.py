"""A brute-force reference for basic search: the official FHIRPath expression, run by fhirpathpy.

Test-side only. `values(resource, code)` evaluates the SearchParameter's expression on one
resource (with `resolve() is X` rewritten as the indexer does); `matches(...)` applies the
R4 matching rules of https://hl7.org/fhir/R4/search.html to those values. It shares no code
with the search SQL except `date_range` (a date's implicit range, tested on its own).
"""

from __future__ import annotations

import copy
import math
import unicodedata
from decimal import Decimal
from typing import Any

from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.search_expression import plain
from carebase.store.index_values import date_range
from fhirpath_oracle import compiled

_NAME_KEYS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_KEYS = ("line", "city", "district", "state", "postalCode", "country", "text")
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def param(type_: str, code: str) -> Any:
    return get_definitions().search_param(type_, code)


def values(resource: dict[str, Any], code: str) -> list[Any]:
    """The parameter's expression evaluated on `resource` (plain JSON values)."""
    expr = param(resource["resourceType"], code).expression
    fns = compiled(expr)
    node = copy.deepcopy(resource)
    try:
        out = fns[0](node, {"resource": node})
    except Exception as exc:  # R4's `(x as T)` over several x means a filter: ofType
        if "singleton" not in str(exc):
            raise
        out = fns[1](node, {"resource": node})
    return [plain(v) for v in out if v is not None]


# ---------------------------------------------------------------------------- value parts


def norm(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).lower().split())


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        keys = _ADDRESS_KEYS if "line" in value or "city" in value else _NAME_KEYS
        out: list[str] = []
        for key in keys:
            part = value.get(key)
            out.extend(part if isinstance(part, list) else [part] if part else [])
        return [s for s in out if s]
    return []


def tokens_of(value: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, text) triples: Coding, CodeableConcept, Identifier, ContactPoint, code."""
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [(None, value, None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "value" not in value):
        out = [(c.get("system"), c.get("code"), c.get("display")) for c in value.get("coding", [])]
        if value.get("text"):
            out.append((None, None, value["text"]))
        return out
    if "value" in value:  # Identifier / ContactPoint
        kind = value.get("type")
        return [(value.get("system"), value["value"], kind.get("text") if kind else None)]
    return [(value.get("system"), value.get("code"), value.get("display"))]


def ranges_of(value: Any) -> list[tuple[float, float]]:
    """Implicit ranges (epoch ms, open ends infinite) of a date, dateTime, instant or Period."""
    if isinstance(value, str):
        span = date_range(value)
        return [span] if span else []
    if isinstance(value, dict) and ("start" in value or "end" in value):
        lo = date_range(value["start"])[0] if value.get("start") else -math.inf
        hi = date_range(value["end"])[1] if value.get("end") else math.inf
        return [(lo, hi)]
    return []


def reference_of(value: Any) -> tuple[str | None, str | None, str | None]:
    """(type, id, url) of a Reference (or canonical string)."""
    text = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(text, str) or text.startswith("#"):
        return None, None, None
    parts = text.split("/")
    types = get_definitions().resource_types
    if len(parts) == 2 and parts[0] in types:
        return parts[0], parts[1], None
    if len(parts) == 4 and parts[0] in types and parts[2] == "_history":
        return parts[0], parts[1], None
    return None, None, text


# ---------------------------------------------------------------------------- matching


def split_prefix(text: str) -> tuple[str, str]:
    if text[:2] in _PREFIXES:
        return text[:2], text[2:]
    return "eq", text


def _date_match(prefix: str, q: tuple[int, int], r: tuple[float, float]) -> bool:
    (qlo, qhi), (lo, hi) = q, r
    contained = lo >= qlo and hi <= qhi
    return {
        "eq": contained,
        "ne": not contained,
        "gt": hi > qhi,
        "lt": lo < qlo,
        "ge": hi > qhi or contained,
        "le": lo < qlo or contained,
        "sa": lo > qhi,
        "eb": hi < qlo,
    }[prefix]


def _number_match(prefix: str, text: str, x: float) -> bool:
    q = Decimal(text)
    half = Decimal(5).scaleb(q.as_tuple().exponent - 1)  # 1.5 -> 0.05, 100 -> 0.5
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    inside = q - half <= d < q + half
    return {
        "eq": inside,
        "ne": not inside,
        "gt": d > q,
        "lt": d < q,
        "ge": d >= q,
        "le": d <= q,
        "sa": d > q,
        "eb": d < q,
    }[prefix]


def match_one(type_: str, code: str, modifier: str, value: str, found: list[Any]) -> bool:
    """Whether a resource whose values for `code` are `found` matches one (unescaped) value."""
    ptype = param(type_, code).type
    if ptype == "string":
        texts = [s for v in found for s in strings_of(v)]
        if modifier == "exact":
            return value in texts
        if modifier == "contains":
            return any(norm(value) in norm(s) for s in texts)
        return any(norm(s).startswith(norm(value)) for s in texts)
    if ptype == "token":
        toks = [t for v in found for t in tokens_of(v)]
        if modifier == "text":
            return any(t[2] and value.lower() in t[2].lower() for t in toks)
        if modifier == "not":
            return not match_one(type_, code, "", value, found)
        if "|" not in value:
            return any(t[1] == value for t in toks)
        system, code_ = value.split("|", 1)
        if system == "":
            return any(t[0] is None and t[1] == code_ for t in toks)
        if code_ == "":
            return any(t[0] == system for t in toks)
        return any(t[0] == system and t[1] == code_ for t in toks)
    if ptype == "date":
        prefix, text = split_prefix(value)
        q = date_range(text)
        assert q is not None
        return any(_date_match(prefix, q, r) for v in found for r in ranges_of(v))
    if ptype == "number":
        prefix, text = split_prefix(value)
        return any(_number_match(prefix, text, v) for v in found if isinstance(v, (int, float)))
    if ptype == "quantity":
        prefix, text = split_prefix(value)
        number, _, rest = text.partition("|")
        system, _, unit = rest.partition("|")
        for v in found:
            if not isinstance(v, dict) or not isinstance(v.get("value"), (int, float)):
                continue
            if not _number_match(prefix, number, v["value"]):
                continue
            if system and v.get("system") != system:
                continue
            if unit and system and v.get("code") != unit:
                continue
            if unit and not system and unit not in (v.get("code"), v.get("unit")):
                continue
            return True
        return False
    if ptype == "uri":
        uris = [v for v in found if isinstance(v, str)]
        if modifier == "below":
            return any(u.startswith(value) for u in uris)
        return value in uris
    if ptype == "reference":
        refs = [reference_of(v) for v in found]
        if "://" in value or value.startswith("urn:"):
            return any(r[2] == value for r in refs)
        if "/" in value:
            t, i = value.split("/")[-2:]
            return any(r[0] == t and r[1] == i for r in refs)
        if modifier:
            return any(r[0] == modifier and r[1] == value for r in refs)
        return any(r[1] == value for r in refs)
    raise AssertionError(f"no reference rule for {ptype}")


def matches(type_: str, name: str, ored: list[str], found: list[Any]) -> bool:
    """One search parameter `name` with OR-ed (unescaped) values against `found`."""
    code, _, modifier = name.partition(":")
    if modifier == "missing":
        return (not found) == (ored[0] == "true")
    if modifier == "not":  # :not negates the whole OR of values
        return not any(match_one(type_, code, "", v, found) for v in ored)
    return any(match_one(type_, code, modifier, v, found) for v in ored)
