"""Search equals a brute-force FHIRPath evaluation, on Synthea data, on both databases.

Queries are drawn (hypothesis, derandomized) from values that occur in the stored data -
a resource, one of its type's parameters, one of its values, a modifier or prefix - plus
random ones; `store.search` must return exactly the ids `search_reference` matches. Then
the forms that span resources or components, drawn the same way: chains (one and two links),
`_has`, composites (and their `:missing`), `_type`, the Patient compartment, `_list` and
`:identifier`, run through `build_search` and compared with `search_reference.Reference`.
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
from search_reference import (
    Reference,
    composite_roots,
    matches,
    param,
    ranges_of,
    reference_of,
    strings_of,
    tokens_of,
)
from search_reference import values as expression_values

from carebase.fhir.bundle import rewrite_references
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import Store
from carebase.store.search_sql import build_search, is_supported

PATIENT_BUNDLES = 5
EXAMPLES = int(os.environ.get("SR_EXAMPLES", "150"))
_TYPES = {"string", "token", "date", "number", "quantity", "uri", "reference"}
_PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
#: (type, id, code) -> expression values; ids are the Synthea ones on both databases
_VALUES: dict[tuple[str, str, str], list[Any]] = {}

Json = dict[str, Any]


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
                rewrite_references(resource, assigned)
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
    _extras(store, bundles)
    stored = _Stored()
    for res in store.iter_current():
        stored.setdefault(res.type, {})[res.id] = orjson.loads(res.body or b"{}")
    return stored


def _extras(store: Store, bundles: list[Json]) -> None:
    """Lists of stored resources (for `_list`) and references by identifier only."""
    first = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundles[0]["entry"]]
    second = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundles[1]["entry"]]
    with store.transaction() as tx:
        for i, picked in enumerate([first[:12], second[::25], first[40:45] + second[:3]]):
            tx.update("List", f"list{i}", {
                "resourceType": "List", "status": "current", "mode": "working",
                "entry": [{"item": {"reference": f"{t}/{x}"}} for t, x in picked],
            })  # fmt: skip
        for i, value in enumerate(["42", "43", "42"]):
            tx.update("Observation", f"ident{i}", {
                "resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"identifier": {"system": f"http://mrn{i % 2}", "value": value}},
            })  # fmt: skip


def _params(type_: str) -> list[str]:
    return sorted(
        code
        for code, sp in get_definitions().search_params(type_).items()
        if sp.type in _TYPES
        and is_supported(sp)
        and sp.expression is not None
        and code not in ("_id", "_lastUpdated")
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


# ---------------------------------------------------------------------------- across resources

Query = tuple[str | None, list[tuple[str, str]], tuple[str, str] | None, list[str]]
#: the forms drawn by `cross_queries`, each one run of examples
CROSS = ["chain", "chain2", "has", "composite", "composite-missing", "type", "compartment",
         "list", "identifier"]  # fmt: skip


def _links(stored: _Stored, type_: str, id_: str) -> list[tuple[str, str, str]]:
    """(reference parameter, target type, target id) of a resource's stored targets."""
    resource = stored[type_][id_]
    out = []
    for code in _params(type_):
        if param(type_, code).type != "reference":
            continue
        for v in _found(type_, id_, resource, code):
            t, i, _url = reference_of(v)
            if t and i in stored.get(t, {}):
                out.append((code, t, i))
    return sorted(set(out))


def _any_resource(draw: Any, stored: _Stored, types: list[str] | None = None) -> tuple[str, str]:
    type_ = draw(st.sampled_from(types or sorted(stored)))
    return type_, draw(st.sampled_from(sorted(stored[type_])))


def _end(draw: Any, stored: _Stored, type_: str, id_: str) -> tuple[str, str, str]:
    """(name, value as sent, plain value) of a basic parameter drawn from one resource."""
    resource = stored[type_][id_]
    codes = [c for c in _params(type_) if param(type_, c).type != "number"]
    present = [c for c in codes if _found(type_, id_, resource, c)]
    code = draw(st.sampled_from(present or codes))
    got = _value(draw, type_, code, _found(type_, id_, resource, code), None)
    if got is None:
        reject()
    modifier, sent, plain = got
    return (f"{code}:{modifier}" if modifier else code), sent, plain


def _composite_value(draw: Any, type_: str, code: str, found: list[list[Any]]) -> str:
    comps = [c for c, _e in param(type_, code).components]
    parts = []
    for n, (comp, values) in enumerate(zip(comps, found, strict=True)):
        ctype = param(type_, comp).type
        last = n == len(comps) - 1
        if ctype == "token":
            toks = [t for v in values for t in tokens_of(v) if t[1] is not None]
            system, value, _text = draw(st.sampled_from(toks)) if toks else (None, "x", None)
            if system and draw(st.booleans()):
                value = f"{system}|{value}"
        elif ctype == "string":
            texts = [t for v in values for t in strings_of(v)]
            value = draw(st.sampled_from(texts)) if texts else "x"
        elif ctype == "reference":
            refs = [r for r in map(reference_of, values) if r[0]]
            value = f"{refs[0][0]}/{refs[0][1]}" if refs else "Patient/x"
        elif ctype in ("quantity", "number") and last:
            nums = [v.get("value") if isinstance(v, dict) else v for v in values]
            nums = [x for x in nums if isinstance(x, (int, float))]
            prefix = draw(st.sampled_from(["", *_PREFIXES]))
            value = prefix + _number_text(draw, draw(st.sampled_from(nums)) if nums else None)
            q = values[0] if values and isinstance(values[0], dict) else {}
            if ctype == "quantity" and draw(st.booleans()) and q.get("system") and q.get("code"):
                value += f"|{q['system']}|{q['code']}"
        elif ctype == "date" and last:
            value = _date_value(draw, values)
        else:
            reject()
        if any(c in value for c in "$,\\") or value.count("|") > (2 if last else 1):
            reject()
        parts.append(value)
    return "$".join(parts)


@st.composite
def cross_queries(draw: Any, stored: _Stored, kind: str, reference: Reference) -> Query:
    """(type or None, parameters, compartment, expected ids) of one drawn query of `kind`."""
    if kind in ("chain", "chain2"):
        type_, id_ = _any_resource(draw, stored)
        links = _links(stored, type_, id_)
        if not links:
            reject()
        code, t1, i1 = draw(st.sampled_from(links))
        path = f"{code}:{t1}" if draw(st.booleans()) else code
        if kind == "chain2":
            deeper = _links(stored, t1, i1)
            if not deeper:
                reject()
            code2, t1, i1 = draw(st.sampled_from(deeper))
            path += f".{code2}"
        name, sent, plain = _end(draw, stored, t1, i1)
        name = f"{path}.{name}"
        return type_, [(name, sent)], None, sorted(reference.ids(type_, name, [plain]))
    if kind == "has":
        source, sid = _any_resource(draw, stored)
        links = _links(stored, source, sid)
        if not links:
            reject()
        ref, type_, _tid = draw(st.sampled_from(links))
        name, sent, plain = _end(draw, stored, source, sid)
        name = f"_has:{source}:{ref}:{name}"
        return type_, [(name, sent)], None, sorted(reference.ids(type_, name, [plain]))
    if kind in ("composite", "composite-missing"):
        types = sorted(t for t in stored if _composites(t))
        type_, id_ = _any_resource(draw, stored, types)
        code = draw(st.sampled_from(_composites(type_)))
        if kind == "composite-missing":
            flag = draw(st.sampled_from(["true", "false"]))
            name = f"{code}:missing"
            return type_, [(name, flag)], None, sorted(reference.ids(type_, name, [flag]))
        roots = list(composite_roots(stored[type_][id_], code))
        if not roots:
            reject()
        value = _composite_value(draw, type_, code, draw(st.sampled_from(roots)))
        return type_, [(code, value)], None, sorted(reference.ids(type_, code, [value]))
    if kind == "type":
        a, b = draw(st.lists(st.sampled_from(sorted(stored)), min_size=2, max_size=2, unique=True))
        shared = sorted(set(_params(a)) & set(_params(b)))
        if not shared:
            reject()
        id_ = draw(st.sampled_from(sorted(stored[a])))
        code = draw(st.sampled_from(shared))
        got = _value(draw, a, code, _found(a, id_, stored[a][id_], code), None)
        if got is None or (got[0] and param(b, code).type != param(a, code).type):
            reject()
        name = f"{code}:{got[0]}" if got[0] else code
        want = reference.ids(a, name, [got[2]]) | reference.ids(b, name, [got[2]])
        return None, [("_type", f"{a},{b}"), (name, got[1])], None, sorted(want)
    if kind == "compartment":
        patient = draw(st.sampled_from(sorted(stored["Patient"])))
        members = [t for t in sorted(stored) if t in _compartment_types()]
        type_ = draw(st.sampled_from(members))
        want = reference.in_compartment(type_, patient)
        params: list[tuple[str, str]] = []
        if want and draw(st.booleans()):
            name, sent, plain = _end(draw, stored, type_, draw(st.sampled_from(sorted(want))))
            params.append((name, sent))
            want &= reference.ids(type_, name, [plain])
        return type_, params, ("Patient", patient), sorted(want)
    if kind == "list":
        lists = sorted(stored["List"])
        chosen = draw(st.lists(st.sampled_from(lists), min_size=1, max_size=2, unique=True))
        items = {reference_of(e["item"])[0] for i in chosen for e in stored["List"][i]["entry"]}
        type_ = draw(st.sampled_from(sorted(t for t in items if t)))
        want = reference.ids(type_, "_list", chosen)
        return type_, [("_list", ",".join(chosen))], None, sorted(want)
    value = draw(st.sampled_from(["http://mrn0|42", "http://mrn1|43", "42", "|42", "http://mrn1|"]))
    want = reference.ids("Observation", "subject:identifier", [value])
    return "Observation", [("subject:identifier", value)], None, sorted(want)


def _composites(type_: str) -> list[str]:
    return sorted(
        c for c, sp in get_definitions().search_params(type_).items() if sp.type == "composite"
    )


def _compartment_types() -> set[str]:
    return {"Patient", *get_definitions().patient_compartment}


def _run(store: Store, query: Query) -> list[str]:
    type_, params, compartment, _want = query
    criteria = build_search(type_, params, dialect=store.dialect, compartment=compartment)
    sql = f"SELECT id FROM resource WHERE {' AND '.join(criteria.where)} ORDER BY id"
    with store._reading() as cur:  # type: ignore[attr-defined]
        rows = cur.execute(store.q(sql), criteria.args).fetchall()  # type: ignore[attr-defined]
    return [r[0] for r in rows]


def _hunting(examples: int) -> Any:
    """Hypothesis settings of these tests: derandomized unless SR_RANDOM is set."""
    return settings(
        max_examples=examples,
        derandomize=not os.environ.get("SR_RANDOM"),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def test_search_equals_brute_force(store: Store, synthea_tar: Path) -> None:
    stored = _load(store, synthea_tar)
    store.refresh_statistics()  # as a bulk load does; a stale plan can take seconds
    seen: set[str] = set()  # parameter types, modifiers and prefixes the queries used

    def check(focus: tuple[str | None, str | None], examples: int) -> None:
        @_hunting(examples)
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
    reference = Reference(stored, lambda t, i, c: _found(t, i, stored[t][i], c))
    hits: dict[str, int] = {}  # queries per kind that matched something

    def cross(kind: str, examples: int) -> None:
        @_hunting(examples)
        @given(cross_queries(stored, kind, reference))
        def run(query: Query) -> None:
            got = _run(store, query)
            assert got == query[3], f"{query[0]}?{query[1]} in {query[2]}"
            if got:
                hits[kind] = hits.get(kind, 0) + 1

        run()

    for kind in CROSS:
        cross(kind, max(EXAMPLES // 3, 10))
    assert set(CROSS) <= set(hits), f"never matched anything: {set(CROSS) - set(hits)}"
    wanted = {"string", "token", "date", "number", "quantity", "reference", "uri"}
    wanted |= {":exact", ":contains", ":not", ":text", ":below", ":missing", ":Patient"}
    wanted |= set(_PREFIXES)
    assert wanted <= seen, f"never drawn: {sorted(wanted - seen)}"
