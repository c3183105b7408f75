"""A brute-force reference for search: the official FHIRPath expression, run by fhirpathpy.

Test-side only. `values(resource, code)` evaluates the SearchParameter's expression on one
resource (with `resolve() is X` rewritten as the indexer does); `matches(...)` applies the
R4 matching rules of https://hl7.org/fhir/R4/search.html to those values. `Reference` walks
the stored resources for the forms that span resources or components: chaining (resolving
references among the stored resources), `_has`, composites, `_list`, `_type` and the Patient
compartment. It shares no code with the search SQL except `date_range` (a date's implicit
range, tested on its own).
"""

from __future__ import annotations

import copy
import math
import time
import unicodedata
from collections.abc import Callable, Iterator
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
    return evaluate(resource, param(resource["resourceType"], code).expression)


def evaluate(resource: dict[str, Any], expr: str) -> list[Any]:
    """A FHIRPath expression evaluated on `resource` (plain JSON values)."""
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
    if prefix == "ap":  # overlaps the value widened by 10% of its distance from now
        now = time.time() * 1000
        margin = int(max(abs(now - qlo), abs(now - qhi)) * 0.1)
        return lo <= qhi + margin and hi >= qlo - margin
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
    if prefix == "ap":  # within 10% of the value, never narrower than its precision
        margin = max(abs(q) / 10, half)
        return float(q - margin) <= float(d) <= float(q + margin)
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


def _token_match(value: str, toks: list[tuple[str | None, str | None, str | None]]) -> bool:
    if "|" not in value:
        return any(t[1] == value for t in toks)
    system, code_ = value.split("|", 1)
    if system == "":
        return any(t[0] is None and t[1] == code_ for t in toks)
    if code_ == "":
        return any(t[0] == system for t in toks)
    return any(t[0] == system and t[1] == code_ for t in toks)


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
        return _token_match(value, toks)
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
        if modifier == "identifier":
            idents = [v["identifier"] for v in found if isinstance(v, dict) and "identifier" in v]
            return _token_match(value, [t for v in idents for t in tokens_of(v)])
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


# ---------------------------------------------------------------------------- across resources

Stored = dict[str, dict[str, dict[str, Any]]]
#: (type, id, code) -> the parameter's values on that stored resource
Found = Callable[[str, str, str], list[Any]]
_COMMON = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_list")


def _split_union(expr: str) -> list[str]:
    """The top-level `|` branches of an expression (outside brackets)."""
    parts, depth, current = [], 0, ""
    for ch in expr:
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def composite_roots(resource: dict[str, Any], code: str) -> Iterator[list[list[Any]]]:
    """Per root of a composite parameter, each component's values on that root."""
    sp = param(resource["resourceType"], code)
    for branch in _split_union(sp.expression):
        for i in range(len(evaluate(resource, branch))):
            yield [evaluate(resource, f"({branch})[{i}].{expr}") for _c, expr in sp.components]


def _indexable(ctype: str, found: list[Any]) -> bool:
    if ctype == "token":
        return any(t[1] is not None for v in found for t in tokens_of(v))
    if ctype == "string":
        return any(strings_of(v) for v in found)
    if ctype == "reference":
        return any(reference_of(v) != (None, None, None) for v in found)
    if ctype in ("quantity", "number"):
        return any(
            isinstance(v, (int, float)) or (isinstance(v, dict) and "value" in v) for v in found
        )
    if ctype == "date":
        return any(ranges_of(v) for v in found)
    return any(isinstance(v, str) for v in found)


def _component_match(type_: str, comp: str, value: str, found: list[Any]) -> bool:
    ctype = param(type_, comp).type
    if ctype == "string":  # composites compare whole normalised strings
        return any(norm(s) == norm(value) for v in found for s in strings_of(v))
    if ctype == "reference":
        return any(value in (f"{r[0]}/{r[1]}", r[2]) for r in map(reference_of, found))
    return match_one(type_, comp, "", value, found)


def composite_match(resource: dict[str, Any], code: str, value: str) -> bool:
    """Whether one plain (unescaped, `$`-joined) composite value matches on one root."""
    type_ = resource["resourceType"]
    comps = [c for c, _e in param(type_, code).components]
    parts = value.split("$")
    return any(
        all(_component_match(type_, c, p, f) for c, p, f in zip(comps, parts, found, strict=True))
        for found in composite_roots(resource, code)
    )


def composite_present(resource: dict[str, Any], code: str) -> bool:
    """Whether some root of the composite has a value for every component."""
    type_ = resource["resourceType"]
    types = [param(type_, c).type for c, _e in param(type_, code).components]
    return any(
        all(_indexable(t, f) for t, f in zip(types, found, strict=True))
        for found in composite_roots(resource, code)
    )


def defines(type_: str, code: str) -> bool:
    """Whether `type_` has the search parameter `code`."""
    return code in _COMMON or code == "_has" or param(type_, code) is not None


class Reference:
    """Brute-force search over stored resources (only current ones are stored)."""

    def __init__(self, stored: Stored, found: Found) -> None:
        self.stored = stored
        self.found = found

    def ids(self, type_: str, name: str, plain: list[str]) -> set[str]:
        """Ids of stored `type_` resources matching `name` with OR-ed plain `values`."""
        here = self.stored.get(type_, {})
        if name.startswith("_has:"):
            _has, source, ref, rest = name.split(":", 3)
            out = set()
            for sid in self.ids(source, rest, plain):
                for v in self.found(source, sid, ref):
                    t, i, _url = reference_of(v)
                    if t == type_ and i in here:
                        out.add(i)
            return out
        if "." in name:
            link, rest = name.split(".", 1)
            code, _, tmod = link.partition(":")
            nxt = rest.split(".")[0].split(":")[0]
            targets = param(type_, code).targets or tuple(get_definitions().resource_types)
            kinds = [tmod] if tmod else [t for t in targets if defines(t, nxt)]
            hits = {(t, i) for t in kinds for i in self.ids(t, rest, plain)}
            return {
                i
                for i in here
                if any(reference_of(v)[:2] in hits for v in self.found(type_, i, code))
            }
        code, _, modifier = name.partition(":")
        if code == "_id":
            return set(plain) & set(here)
        if code == "_list":
            items = {
                reference_of(v)[:2]
                for lid in plain
                if lid in self.stored.get("List", {})
                for v in self.found("List", lid, "item")
            }
            return {i for i in here if (type_, i) in items}
        if param(type_, code).type == "composite":
            if modifier == "missing":
                return {
                    i for i, r in here.items() if composite_present(r, code) != (plain[0] == "true")
                }
            return {i for i, r in here.items() if any(composite_match(r, code, v) for v in plain)}
        return {i for i in here if matches(type_, name, plain, self.found(type_, i, code))}

    def in_compartment(self, type_: str, patient: str) -> set[str]:
        """Ids of stored `type_` resources in the compartment of Patient/`patient`."""
        codes = get_definitions().patient_compartment.get(type_, ())
        out = {patient} & set(self.stored.get(type_, {})) if type_ == "Patient" else set()
        for i in self.stored.get(type_, {}):
            if any(
                reference_of(v)[:2] == ("Patient", patient)
                for c in codes
                for v in self.found(type_, i, c)
            ):
                out.add(i)
        return out
