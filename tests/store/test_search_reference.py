"""Basic search equals a brute-force FHIRPath evaluation, on Synthea data, on both databases.

Queries are drawn (hypothesis, derandomized) from values that occur in the stored data -
a resource, one of its type's parameters, one of its values, a modifier or prefix - plus
random ones; `store.search` must return exactly the ids `search_reference` matches.
To hunt wider: SR_EXAMPLES=2000 (examples per run) and SR_RANDOM=1 (fresh random draws).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from search_reference import matches, param, ranges_of, reference_of, strings_of, tokens_of
from search_reference import values as expression_values

from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import Store
from carebase.store.search_sql import is_supported

PATIENT_BUNDLES = 5
EXAMPLES = int(os.environ.get("SR_EXAMPLES", "150"))
_TYPES = {"string", "token", "date", "number", "quantity", "uri", "reference"}
_PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]
#: (type, id, code) -> expression values; ids are the Synthea ones on both databases
_VALUES: dict[tuple[str, str, str], list[Any]] = {}

Json = dict[str, Any]


def _references(node: object, assigned: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in assigned:
            node["reference"] = assigned[ref]
        for value in node.values():
            _references(value, assigned)
    elif isinstance(node, list):
        for value in node:
            _references(value, assigned)


class _Stored(dict[str, dict[str, Json]]):
    def __repr__(self) -> str:  # hypothesis prints strategy arguments
        return "<stored resources>"


def _load(store: Store, synthea_tar: Path) -> _Stored:
    """The first patient Bundles stored under their own ids (urn references -> Type/id)."""
    bundles = []
    with tarfile.open(synthea_tar) as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name.endswith(".json") and not name[0].islower():
                extracted = tar.extractfile(member)
                assert extracted is not None
                bundles.append(orjson.loads(extracted.read()))
                if len(bundles) == PATIENT_BUNDLES:
                    break
    for bundle in bundles:
        entries = [e["resource"] for e in bundle["entry"]]
        assigned = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle["entry"]
        }
        with store.transaction() as tx:
            for resource in entries:
                _references(resource, assigned)
                tx.update(resource["resourceType"], resource["id"], resource)
    with store.transaction() as tx:  # Synthea has no `number` parameter values: add some
        for i, p in enumerate([0.25, 0.3, 1, 12.5, 0.05, 100, 7.0, 0.333]):
            risk = {
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": {"reference": "Patient/nope"},
                "prediction": [{"probabilityDecimal": p}, {"probabilityDecimal": p * 2}],
            }
            tx.update("RiskAssessment", f"risk{i}", risk)
    stored = _Stored()
    for res in store.iter_current():
        stored.setdefault(res.type, {})[res.id] = orjson.loads(res.body or b"{}")
    return stored


def _params(type_: str) -> list[str]:
    return sorted(
        code
        for code, sp in get_definitions().search_params(type_).items()
        if sp.type in _TYPES and is_supported(sp) and code not in ("_id", "_lastUpdated")
    )


def _found(type_: str, id_: str, resource: Json, code: str) -> list[Any]:
    key = (type_, id_, code)
    if key not in _VALUES:
        _VALUES[key] = expression_values(resource, code)
    return _VALUES[key]


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|")


def _plain_text(text: str | None) -> bool:
    return bool(text) and not any(c in text for c in "\\|,$")  # type: ignore[operator]


_RANDOM_TEXT = st.text(alphabet="abcdeilmnorstu 019-", min_size=1, max_size=6).filter(
    lambda s: s.strip() == s and s != ""
)


def _date_value(draw: Any, found: list[Any]) -> str:
    texts = [
        t
        for v in found
        for t in ([v] if isinstance(v, str) else [v.get("start"), v.get("end")])
        if t and ranges_of(t)
    ]
    if texts and draw(st.integers(0, 4)):
        text = draw(st.sampled_from(texts))
        cut = draw(st.sampled_from([4, 7, 10, 16, len(text)]))
        text = text[:cut] if cut < len(text) else text
    else:
        year = draw(st.integers(1940, 2025))
        text = draw(st.sampled_from([f"{year}", f"{year}-06", f"{year}-03-15"]))
    return draw(st.sampled_from(["", *_PREFIXES])) + text


def _number_text(draw: Any, x: float | None) -> str:
    if x is None or not draw(st.integers(0, 3)):
        return str(draw(st.integers(0, 300)))
    form = draw(st.sampled_from(["repr", "int", "1dp"]))
    if form == "int":
        return str(round(x))
    return f"{x:.1f}" if form == "1dp" else repr(x)


def _value(
    draw: Any, type_: str, code: str, found: list[Any], forced: str | None
) -> tuple[str, str, str] | None:
    """(modifier, query value as sent, the same value unescaped) or None to skip."""
    ptype = param(type_, code).type
    if ptype == "string":
        texts = [s for v in found for s in strings_of(v) if "\\" not in s]
        text = draw(st.sampled_from(texts)) if texts else draw(_RANDOM_TEXT)
        modifier = forced or draw(st.sampled_from(["contains", "exact", "", ""]))
        if modifier == "contains" and len(text) > 2:
            start = draw(st.integers(0, len(text) - 2))
            text = text[start : start + draw(st.integers(1, len(text) - start))]
        elif modifier == "":
            text = text[: draw(st.integers(1, len(text)))]
        if not text.strip():
            return None
        return modifier, _esc(text), text
    if ptype == "token":
        toks = [t for v in found for t in tokens_of(v)]
        system, code_, text = draw(st.sampled_from(toks)) if toks else (None, None, None)
        if draw(st.integers(0, 5)) == 0:
            code_ = draw(_RANDOM_TEXT)
        modifier = forced or draw(st.sampled_from(["text", "not", "", "", ""]))
        if modifier == "text":
            if not _plain_text(text) or not text.isascii():  # type: ignore[union-attr]
                return None
            start = draw(st.integers(0, len(text) - 1))  # type: ignore[arg-type]
            text = text[start : start + draw(st.integers(1, 8))]  # type: ignore[index]
            return (modifier, text, text) if text.strip() else None
        if not _plain_text(code_) or (system is not None and not _plain_text(system)):
            return None
        primitive = any(not isinstance(v, dict) for v in found)  # implicit system: code only
        form = "code" if primitive else draw(st.sampled_from(["code", "sc", "|c", "s|"]))
        if form == "sc" and system:
            value = f"{system}|{code_}"
        elif form == "|c":
            value = f"|{code_}"
        elif form == "s|" and system:
            value = f"{system}|"
        else:
            value = code_  # type: ignore[assignment]
        return modifier, value, value
    if ptype == "date":
        value = _date_value(draw, found)
        return "", value, value
    if ptype == "number":
        nums = [v for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]
        x = draw(st.sampled_from(nums)) if nums else None
        value = draw(st.sampled_from(["", *_PREFIXES])) + _number_text(draw, x)
        return "", value, value
    if ptype == "quantity":
        qs = [v for v in found if isinstance(v, dict) and isinstance(v.get("value"), (int, float))]
        q = draw(st.sampled_from(qs)) if qs else {}
        value = draw(st.sampled_from(["", *_PREFIXES])) + _number_text(draw, q.get("value"))
        form = draw(st.sampled_from(["", "", "sc", "|c", "s|"]))
        system, unit = q.get("system"), q.get("code") or q.get("unit")
        if form and not all(_plain_text(p) for p in (system, unit)):
            return None
        if form == "sc":
            value += f"|{system}|{unit}"
        elif form == "|c":
            value += f"||{unit}"
        elif form == "s|":
            value += f"|{system}|"
        return "", value, value
    if ptype == "uri":
        uris = [v for v in found if isinstance(v, str)]
        uri = draw(st.sampled_from(uris)) if uris else "http://example.org/" + draw(_RANDOM_TEXT)
        modifier = forced or draw(st.sampled_from(["below", ""]))
        if modifier == "below":
            uri = uri[: draw(st.integers(1, len(uri)))]
        return modifier, _esc(uri), uri
    refs = [r for r in map(reference_of, found) if r != (None, None, None)]
    rtype, rid, url = draw(st.sampled_from(refs)) if refs else ("Patient", "nope", None)
    if url is not None:
        return ("", _esc(url), url) if "|" not in url else None
    form = draw(st.sampled_from(["typed", "id", "modifier"]))
    if form == "typed":
        return "", f"{rtype}/{rid}", f"{rtype}/{rid}"
    if form == "modifier" and rtype in (param(type_, code).targets or [rtype]):
        return rtype, rid, rid  # type: ignore[return-value]
    return "", rid, rid  # type: ignore[return-value]


_PERIODS: dict[int, list[tuple[str, str]]] = {}


def _period_codes(stored: dict[str, dict[str, Json]], type_: str, id_: str) -> list[str]:
    resource = stored[type_][id_]
    return [
        c
        for c in _params(type_)
        if param(type_, c).type == "date"
        and any(isinstance(v, dict) for v in _found(type_, id_, resource, c))
    ]


def _period_resources(stored: dict[str, dict[str, Json]]) -> list[tuple[str, str]]:
    """(type, id) of every resource with a Period-valued date parameter (computed once)."""
    if id(stored) not in _PERIODS:
        _PERIODS[id(stored)] = [
            (t, i) for t in sorted(stored) for i in sorted(stored[t]) if _period_codes(stored, t, i)
        ]
    return _PERIODS[id(stored)]


@st.composite
def queries(
    draw: Any, stored: dict[str, dict[str, Json]], focus: tuple[str | None, str | None]
) -> tuple[str, str, str, list[str]]:
    """(type, parameter name, query text, unescaped values) drawn from the stored data;
    `focus` = (parameter type, modifier) narrows the draw to one of each (None: any)."""
    ptype, forced = focus
    types = sorted(t for t in stored if any(ptype in (None, param(t, c).type) for c in _params(t)))
    if forced == "period":  # resources whose date is a Period: ranges that straddle
        pairs = _period_resources(stored)
        type_, id_ = draw(st.sampled_from(pairs))
        code = draw(st.sampled_from(_period_codes(stored, type_, id_)))
        found = _found(type_, id_, stored[type_][id_], code)
        value = _date_value(draw, found)
        return type_, code, value, [value]
    if draw(st.booleans()):  # by type, else by resource (most are Observations)
        type_ = draw(st.sampled_from(types))
        id_ = draw(st.sampled_from(sorted(stored[type_])))
    else:
        type_, id_ = draw(st.sampled_from(sorted((t, i) for t in types for i in stored[t])))
    resource = stored[type_][id_]
    codes = [c for c in _params(type_) if ptype in (None, param(type_, c).type)]
    present = [c for c in codes if _found(type_, id_, resource, c)]
    pool = present if present and draw(st.integers(0, 6)) else codes
    kind = draw(st.sampled_from(sorted({param(type_, c).type for c in pool})))
    code = draw(st.sampled_from([c for c in pool if param(type_, c).type == kind]))
    found = _found(type_, id_, resource, code)
    if forced == "missing" or (forced is None and draw(st.integers(0, 20)) == 20):
        flag = draw(st.sampled_from(["true", "false"]))
        return type_, f"{code}:missing", flag, [flag]
    picked = draw(st.lists(st.just(None), min_size=1, max_size=2))
    sent, plain = [], []
    modifier = None
    for _ in picked:
        got = _value(draw, type_, code, found, forced)
        if got is None or (modifier is not None and got[0] != modifier):
            continue
        modifier = got[0]
        sent.append(got[1])
        plain.append(got[2])
    if not sent:
        reject()
    name = f"{code}:{modifier}" if modifier else code
    return type_, name, ",".join(sent), plain


def _reference_ids(
    stored: dict[str, dict[str, Json]], type_: str, name: str, plain: list[str]
) -> list[str]:
    code = name.partition(":")[0]
    return sorted(
        id_
        for id_, resource in stored.get(type_, {}).items()
        if matches(type_, name, plain, _found(type_, id_, resource, code))
    )


#: (parameter type, modifier) of each run of examples: one free run, then one per
#: type and modifier, so derandomized draws still reach every form
FOCI: list[tuple[str | None, str | None]] = [
    (None, None),
    ("string", ""),
    ("string", "exact"),
    ("string", "contains"),
    ("token", ""),
    ("token", "not"),
    ("token", "text"),
    ("date", None),
    ("date", "period"),
    ("number", None),
    ("quantity", None),
    ("uri", ""),
    ("uri", "below"),
    ("reference", None),
    (None, "missing"),
]


def test_search_equals_brute_force(store: Store, synthea_tar: Path) -> None:
    stored = _load(store, synthea_tar)
    seen: set[str] = set()  # parameter types, modifiers and prefixes the queries used

    def check(focus: tuple[str | None, str | None], examples: int) -> None:
        @settings(
            max_examples=examples,
            derandomize=not os.environ.get("SR_RANDOM"),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(queries(stored, focus))
        def run(query: tuple[str, str, str, list[str]]) -> None:
            type_, name, text, plain = query
            code, _, modifier = name.partition(":")
            seen.add(param(type_, code).type)
            seen.add(f":{modifier}")
            seen.update(v[:2] for v in plain if v[:2].isalpha())
            got = sorted(e.id for e in store.search(type_, [(name, text)], count=1000).entries)
            want = _reference_ids(stored, type_, name, plain)
            assert got == want, f"{type_}?{name}={text}"

        run()

    for focus in FOCI:
        wide = focus in (
            (None, None),
            ("date", None),
            ("date", "period"),
        )  # dates: most prefix x range cases
        check(focus, EXAMPLES if wide else max(EXAMPLES // 4, 10))
    wanted = {"string", "token", "date", "number", "quantity", "reference", "uri"}
    wanted |= {":exact", ":contains", ":not", ":text", ":below", ":missing", ":Patient"}
    wanted |= set(_PREFIXES)
    assert wanted <= seen, f"never drawn: {sorted(wanted - seen)}"
