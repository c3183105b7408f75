"""Per (search parameter type, FHIR value type) functions that append index rows.

`converter(ptype, vtype, code, ...)` is called once per parameter branch when a resource
type's plan is built; the returned closure runs per value on every write, so it only does
dictionary lookups and appends. Value/row rules follow https://hl7.org/fhir/R4/search.html.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from carebase.fhir.json_io import FhirDecimal
from carebase.store.index_rows import IndexRows
from carebase.store.index_values import (
    date_range,
    decimal_range,
    normalize_string,
    parse_reference,
)

#: the classes JSON numbers parse into (FhirDecimal keeps a decimal's written precision)
_NUMBERS = (int, float, FhirDecimal)
Convert = Callable[[Any, IndexRows], None]

_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
_STRINGISH = frozenset({"string", "markdown", "code", "id", "uri", "url", "canonical", "oid"})
_URIISH = frozenset({"uri", "url", "canonical", "oid", "uuid", "string", "code", "id"})
_DATEISH = frozenset({"date", "dateTime", "instant"})
_NAME_PARTS = (("family", False), ("given", True), ("prefix", True), ("suffix", True))
_ADDRESS_PARTS = (
    ("line", True),
    ("city", False),
    ("district", False),
    ("state", False),
    ("postalCode", False),
    ("country", False),
)
_INF = float("inf")


class Context:
    """What converters need beyond the value: the server base URL and the resource types."""

    def __init__(self, base_url: str | None, resource_types: Collection[str]) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.resource_types = resource_types

    def extension_value(self, ext: Any) -> tuple[Any, str] | None:
        """(value, type) of an Extension's `value[x]`, found by its JSON key."""
        if ext.__class__ is not dict:
            return None
        for key, value in ext.items():
            if key.startswith("value") and len(key) > 5:
                suffix = key[5:]
                lowered = suffix[0].lower() + suffix[1:]
                return value, lowered if lowered in _PRIMITIVE_NAMES else suffix
        return None


_PRIMITIVE_NAMES = frozenset(
    {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
        "instant", "integer", "markdown", "oid", "positiveInt", "string", "time",
        "unsignedInt", "uri", "url", "uuid",
    }
)  # fmt: skip


def converter(
    ptype: str, vtype: str, code: str, system: str | None, ctx: Context
) -> Convert | None:
    """The row writer for values of FHIR type `vtype` under parameter `code` of `ptype`.

    None when R4 defines no index for that combination (e.g. SampledData as a quantity).
    `vtype` `Extension` reads the extension's value[x]; `*` (fhirpathpy fallback results)
    guesses the type from the value's shape.
    """
    if vtype in ("Extension", "*"):
        return _dynamic(ptype, vtype, code, ctx)
    make = _MAKERS.get(ptype)
    return make(vtype, code, system, ctx) if make else None


def _dynamic(ptype: str, vtype: str, code: str, ctx: Context) -> Convert:
    cache: dict[str, Convert | None] = {}

    def convert(value: Any, rows: IndexRows) -> None:
        if vtype == "Extension":
            found = ctx.extension_value(value)
            if found is None:
                return
            value, actual = found
        else:
            actual = guess_type(value, ptype)
        if actual not in cache:
            cache[actual] = converter(ptype, actual, code, None, ctx)
        conv = cache[actual]
        if conv is not None:
            conv(value, rows)

    return convert


def guess_type(value: Any, ptype: str) -> str:
    """The FHIR type a value of unknown type most likely has (fhirpathpy fallback results)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "decimal"
    if isinstance(value, str):
        return {"date": "dateTime", "reference": "canonical", "uri": "uri"}.get(ptype, "string")
    if not isinstance(value, dict):
        return "?"
    keys = value.keys()
    for vtype, marker in (
        ("Resource", "resourceType"),
        ("Extension", "url"),
        ("CodeableConcept", "coding"),
        ("Reference", "reference"),
        ("HumanName", "family"),
        ("HumanName", "given"),
        ("Address", "city"),
        ("Address", "line"),
        ("Period", "start"),
        ("Period", "end"),
        ("Range", "low"),
        ("Range", "high"),
        ("Timing", "event"),
        ("Timing", "repeat"),
        ("Money", "currency"),
    ):
        if marker in keys:
            return vtype
    if "value" in keys and ptype == "quantity":
        return "Quantity"
    if "value" in keys:
        return "ContactPoint" if value.get("system") in ("phone", "email", "fax") else "Identifier"
    if "code" in keys or "system" in keys:
        return "Coding"
    return "CodeableConcept" if "text" in keys else "?"


# ------------------------------------------------------------------------------ token


def _token(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype == "CodeableConcept":

        def concept(v: Any, rows: IndexRows) -> None:
            tok = rows.token
            for c in v.get("coding", ()):
                tok.append((code, c.get("system"), c.get("code"), c.get("display")))
            text = v.get("text")
            if text:
                tok.append((code, None, None, text))

        return concept
    if vtype == "Coding":
        return lambda v, rows: rows.token.append(
            (code, v.get("system"), v.get("code"), v.get("display"))
        )
    if vtype == "Identifier":
        of_type = code + ":of-type"

        def identifier(v: Any, rows: IndexRows) -> None:
            value, sys_ = v.get("value"), v.get("system")
            if value is not None or sys_ is not None:
                kind = v.get("type")
                rows.token.append((code, sys_, value, kind.get("text") if kind else None))
                # `:of-type` rows: (type coding's system, identifier value, type coding's code)
                # - the value in `code`, the selective column of the token index
                if kind and value is not None:
                    for c in kind.get("coding", ()):
                        if c.get("code") is not None:
                            rows.token.append((of_type, c.get("system"), value, c["code"]))

        return identifier
    if vtype == "ContactPoint":

        def contact(v: Any, rows: IndexRows) -> None:
            value = v.get("value")
            if value is not None:
                rows.token.append((code, v.get("system"), value, None))

        return contact
    if vtype == "boolean":
        return lambda v, rows: rows.token.append((code, None, "true" if v else "false", None))
    if vtype in _STRINGISH or vtype == "uuid":
        return lambda v, rows: rows.token.append((code, system, v, None))
    return None


# ------------------------------------------------------------------------------ string


def _string(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype in _STRINGISH:
        return lambda v, rows: rows.string.append((code, normalize_string(v), v))
    if vtype in ("HumanName", "Address"):
        parts = _NAME_PARTS if vtype == "HumanName" else _ADDRESS_PARTS

        def compound(v: Any, rows: IndexRows) -> None:
            out = rows.string
            for key, many in parts:
                part = v.get(key)
                if part is None:
                    continue
                for text in part if many else (part,):
                    if text:
                        out.append((code, normalize_string(text), text))
            text = v.get("text")
            if text:
                out.append((code, normalize_string(text), text))

        return compound
    return None


# ------------------------------------------------------------------------------ date


def _date(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype in _DATEISH:

        def moment(v: Any, rows: IndexRows) -> None:
            span = date_range(v)
            if span is not None:
                rows.date.append((code, span[0], span[1]))

        return moment
    if vtype == "Period":
        return lambda v, rows: _period(code, v, rows)
    if vtype == "Timing":

        def timing(v: Any, rows: IndexRows) -> None:
            spans = [s for s in map(date_range, v.get("event", ())) if s is not None]
            if spans:
                rows.date.append((code, min(s[0] for s in spans), max(s[1] for s in spans)))
                return
            bounds = v.get("repeat", {}).get("boundsPeriod")
            if bounds:
                _period(code, bounds, rows)

        return timing
    return None


def _period(code: str, v: Any, rows: IndexRows) -> None:
    start, end = v.get("start"), v.get("end")
    low = high = None
    if start:
        span = date_range(start)
        low = span[0] if span else None
    if end:
        span = date_range(end)
        high = span[1] if span else None
    if low is not None or high is not None:
        rows.date.append((code, low, high))


# ------------------------------------------------------------------------------ number, quantity


def _number(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype == "decimal" or vtype in _INTEGER_TYPES:
        exact = vtype in _INTEGER_TYPES

        def number(v: Any, rows: IndexRows) -> None:
            if v.__class__ in _NUMBERS:
                low, high = decimal_range(v, exact)
                rows.number.append((code, float(v), low, high))

        return number
    if vtype == "Range":

        def range_(v: Any, rows: IndexRows) -> None:
            low, high = _range_bounds(v)
            if low is not None:
                rows.number.append((code, low[0], low[1], high[2] if high else _INF))
            elif high is not None:
                rows.number.append((code, high[0], -_INF, high[2]))

        return range_
    return None


def _range_bounds(v: Any) -> tuple[tuple[float, float, float] | None, ...]:
    out: list[tuple[float, float, float] | None] = []
    for key in ("low", "high"):
        q = v.get(key)
        value = q.get("value") if q else None
        if value.__class__ in _NUMBERS:
            low, high = decimal_range(value)
            out.append((float(value), low, high))
        else:
            out.append(None)
    return tuple(out)


def _quantity(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype in _QUANTITY_TYPES:

        def quantity(v: Any, rows: IndexRows) -> None:
            value = v.get("value")
            if value.__class__ in _NUMBERS:
                low, high = decimal_range(value)
                rows.quantity.append(
                    (code, v.get("system"), v.get("code"), v.get("unit"), float(value), low, high)
                )

        return quantity
    if vtype == "Money":

        def money(v: Any, rows: IndexRows) -> None:
            value, currency = v.get("value"), v.get("currency")
            if value.__class__ in _NUMBERS:
                low, high = decimal_range(value)
                rows.quantity.append(
                    (code, "urn:iso:std:iso:4217", currency, currency, float(value), low, high)
                )

        return money
    if vtype == "Range":

        def range_(v: Any, rows: IndexRows) -> None:
            low, high = _range_bounds(v)
            unit_of = v.get("low") or v.get("high") or {}
            if low is None and high is None:
                return
            value = low[0] if low else high[0]  # type: ignore[index]
            rows.quantity.append(
                (
                    code,
                    unit_of.get("system"),
                    unit_of.get("code"),
                    unit_of.get("unit"),
                    value,
                    low[1] if low else -_INF,
                    high[2] if high else _INF,
                )
            )

        return range_
    return None


# ------------------------------------------------------------------------------ uri, reference


def _uri(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype in _URIISH:
        return lambda v, rows: rows.uri.append((code, v))
    return None


def _reference(vtype: str, code: str, system: str | None, ctx: Context) -> Convert | None:
    if vtype == "Reference":
        types, base = ctx.resource_types, ctx.base_url
        ident_code = code + ":identifier"

        def reference(v: Any, rows: IndexRows) -> None:
            ref = v.get("reference")
            if ref:
                parsed = parse_reference(ref, base, types)
                if parsed is not None:
                    rows.reference.append((code, *parsed))
            ident = v.get("identifier")
            if ident:
                value, sys_ = ident.get("value"), ident.get("system")
                if value is not None or sys_ is not None:
                    kind = ident.get("type")
                    text = kind.get("text") if kind else None
                    rows.token.append((ident_code, sys_, value, text))

        return reference
    if vtype in ("canonical", "uri", "url"):
        return lambda v, rows: rows.reference.append((code, None, None, None, v))
    if vtype == "Resource":

        def resource(v: Any, rows: IndexRows) -> None:
            rtype, rid = v.get("resourceType"), v.get("id")
            if rtype and rid:
                rows.reference.append((code, rtype, rid, None, None))

        return resource
    return None


_MAKERS: dict[str, Callable[[str, str, str | None, Context], Convert | None]] = {
    "token": _token,
    "string": _string,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
    "reference": _reference,
}
