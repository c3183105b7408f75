"""Robustness: random requests never get a 500, errors are OperationOutcomes, and fail cleanly.

Hypothesis builds requests from random methods, FHIR-shaped and random paths, query strings,
headers (If-Match, If-None-Match, If-None-Exist, Prefer, Accept, Content-Type) and bodies
(random bytes, random JSON, valid resources with random damage: dropped fields, wrong types,
nulls, huge strings, deep nesting, odd unicode, out-of-range numbers). For every response:
no 500; every 4xx/5xx is a JSON OperationOutcome with an issue carrying severity, code and
diagnostics; and after a failed request the store has no new version anywhere and the
resource the request targeted reads back exactly as before.

The run is derandomized (the same examples every time) so CI is stable; raise MAX_EXAMPLES
locally to search harder.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

import anyio.from_thread
import httpx
import orjson
from api_helpers import bearer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

MAX_EXAMPLES = int(os.environ.get("CAREBASE_FUZZ_EXAMPLES", "2000"))

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "fz-p1",
    "identifier": [{"system": "http://example.org/mrn", "value": "fz-1"}],
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "multipleBirthInteger": 2,
    "telecom": [{"system": "phone", "value": "555-0100", "rank": 1}],
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "fz-o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/fz-p1"},
    "effectiveDateTime": "2024-05-01T10:20:00Z",
    "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org"},
    "component": [{"code": {"text": "x"}, "valueInteger": 3}],
}
BASIC: dict[str, Any] = {"resourceType": "Basic", "id": "fz-b1", "code": {"text": "fuzz"}}
SEEDS = (PATIENT, OBSERVATION, BASIC)
KNOWN_IDS = ("fz-p1", "fz-o1", "fz-b1")

BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:8c2b6f3e-0f55-4c47-9d3e-3f1c2c0e6a11",
            "resource": {k: v for k, v in PATIENT.items() if k != "id"},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {**OBSERVATION, "subject": {"reference": "Patient/fz-p1"}},
            "request": {"method": "PUT", "url": "Observation/fz-o1", "ifMatch": 'W/"1"'},
        },
        {"request": {"method": "DELETE", "url": "Basic/fz-b1"}},
        {"request": {"method": "GET", "url": "Patient/fz-p1"}},
    ],
}
FHIRPATH_PATCH: dict[str, Any] = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Patient.birthDate"},
                {"name": "value", "valueDate": "1980-01-01"},
            ],
        }
    ],
}
JSON_PATCH: list[Any] = [
    {"op": "replace", "path": "/gender", "value": "female"},
    {"op": "add", "path": "/name/0/given/-", "value": "Q"},
    {"op": "test", "path": "/id", "value": "fz-p1"},
]
VALIDATE_PARAMETERS: dict[str, Any] = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "resource", "resource": PATIENT},
        {"name": "mode", "valueCode": "create"},
    ],
}
BASES: tuple[Any, ...] = (PATIENT, OBSERVATION, BASIC, BUNDLE, FHIRPATH_PATCH, JSON_PATCH)

SEEDED_TYPES = ("Patient", "Observation", "Basic")
TYPES = (*SEEDED_TYPES * 3, "Bundle", "Parameters", "OperationOutcome", "Account")
BAD_TYPES = ("patient", "Foo", "Resource", "DomainResource", "metadata", "Patient.", "%20", "Ω")
IDS = (*KNOWN_IDS * 4, "new-1", "x" * 64, "x" * 65, "a b", "..", "é", "-", "1", "a/b", "Patient")
VIDS = ("1", "2", "0", "00", "-1", "1.5", "²", "٣", "9" * 18, "9" * 25, "x", "1e3", " 1")
PARAM_NAMES = (
    "_id", "_count", "_since", "_at", "_format", "_pretty", "_summary", "_elements", "_cursor",
    "_sort", "_total", "_include", "_revinclude", "_lastUpdated", "_tag", "_profile", "_has",
    "_text", "_content", "_list", "_type", "mode", "name", "family", "given", "birthdate",
    "gender", "identifier", "subject", "patient", "code", "status", "date", "value-quantity",
    "component-code-value-quantity", "name:exact", "name:contains", "gender:missing",
    "subject:Patient", "subject.name", "code:text", "code:in", "birthdate:above", "_id:not",
    "_has:Observation:subject:code", "identifier:of-type", "telecom", "phone", "address",
)  # fmt: skip
PARAM_VALUES = (
    "", "x", "fz-p1", "Patient/fz-p1", "http://loinc.org|8867-4", "|8867-4", "http://loinc.org|",
    "|", "||", "a|b|c", "1", "0", "-1", "²", "٣", "9" * 30, "1e400", "NaN", "true", "maybe",
    "2024", "2024-05", "2024-05-01", "2024-05-01T10:20:00Z", "2024-13-45", "ge2024-01-01",
    "lt1900", "eq72", "gt72|http://unitsofmeasure.org|/min", "ap0.5", "sa9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59+14:00", "9999-12-31T23:59:59-14:00",
    "Patient:name", "*", "count", "accurate", "text", "data", "-_lastUpdated", "name,-birthdate",
    "json", "xml", "application/fhir+xml", "8867-4$72", "\x00", "%", "'; DROP TABLE resource;--",
    "x" * 5000,
)  # fmt: skip
FORM = "application/x-www-form-urlencoded"
CONTENT_TYPES = (
    "application/fhir+json", "application/json", "application/json-patch+json",
    "application/fhir+xml", "application/xml", FORM,
    "text/plain", "", "application/fhir+json; charset=latin-1",
    "application/fhir+json; fhirVersion=3.0", "multipart/form-data; boundary=x", ";;;",
)  # fmt: skip
ACCEPTS = (
    "application/fhir+json", "application/json", "application/fhir+xml", "*/*", "text/html",
    "", "application/fhir+json;q=0, */*;q=0", "application/*", "json", ",,,", "*/*;q=abc",
)  # fmt: skip
ETAGS = (
    'W/"1"', 'W/"2"', '"1"', "1", 'W/"0"', 'W/"999999999999999999"', 'W/"99999999999999999999"',
    "*", "", 'W/""', 'W/"-1"', 'W/"1", W/"2"', "garbage",
)  # fmt: skip
DATES = (
    "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 01 Jan 0001 00:00:00 GMT", "garbage", "", "2024-05-01T10:20:00Z",
)  # fmt: skip
PREFERS = (
    "return=minimal", "return=representation", "return=OperationOutcome", "return=",
    "handling=strict", "handling=lenient", "respond-async", "return=minimal; handling=strict",
    '"', ",,;;==",
)  # fmt: skip

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
any_text = st.text(max_size=30)


def huge_string(size: int) -> str:
    return "ℵ" * size


def deep(levels: int, kind: str) -> Any:
    node: Any = "bottom"
    for _ in range(levels):
        node = [node] if kind == "list" else {"a": node}
    return node


ODD_VALUES: tuple[Any, ...] = (
    None, "", " ", "\x00", "\u202e", "\U0001f600", "\uff46\uff55\uff4c\uff4c", "\u0663", True,
    False, 0, -1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e308, 5e-324,
    [], {}, [None], [[]], {"": None}, "Patient/fz-p1", "urn:uuid:x", "#x", "2024-02-30",
    "9999-12-31T23:59:59+14:00", "0000-01-01", "T", "<div>x</div>",
    '<div xmlns="http://www.w3.org/1999/xhtml"><script>x</script></div>',
)  # fmt: skip
NASTY_VALUES = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
    st.builds(huge_string, st.sampled_from([1000, 70_000, 1_100_000])),
    st.builds(deep, st.sampled_from([30, 99, 101, 500]), st.sampled_from(["list", "dict"])),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["resourceType", "id", "meta", "entry", "op", "path", "value"])
            | any_text,
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)

RAW_BODIES = (
    b"",
    b" ",
    b"null",
    b"[]",
    b"{}",
    b'"Patient"',
    b"[" * 5000,
    b'{"a":' * 2000,
    b"\xff\xfe{}",
    b'\xef\xbb\xbf{"resourceType":"Basic","code":{"text":"bom"}}',
    b'{"resourceType":"Basic","code":{"text":"x"}',
    b'{"resourceType":"Basic","code":{"text":"x"}}{"x":1}',
    b'{"resourceType":"Basic","resourceType":"Patient"}',
    b'{"resourceType":"Patient","id":"fz-p1","multipleBirthInteger":1e400}',
    b'{"resourceType":"Patient","id":"fz-p1","multipleBirthInteger":99999999999999999999}',
    b'{"resourceType":"Patient","id":"fz-p1","multipleBirthInteger":-9223372036854775809}',
    b'{"resourceType":"Patient","id":"fz-p1","name":[{"family":"\\ud800"}]}',
    b'{"resourceType":"Patient","id":"fz-p1","name":[{"family":"a\\u0000b"}]}',
    b'{"resourceType":"Patient","id":"fz-p1","gender":NaN}',
    b'{"resourceType":"Observation","id":"fz-o1","status":"final","code":{"text":"x"},'
    b'"valueQuantity":{"value":1e308}}',
    b'{"resourceType":"Observation","id":"fz-o1","status":"final","code":{"text":"x"},'
    b'"valueQuantity":{"value":-1e-320}}',
    b'{"resourceType":"Observation","id":"fz-o1","status":"final","code":{"text":"x"},'
    b'"effectiveDateTime":"9999-12-31T23:59:59-14:00"}',
    b'{"resourceType":"Observation","id":"fz-o1","status":"final","code":{"text":"x"},'
    b'"effectiveDateTime":"0001-01-01T00:00:00+14:00"}',
    b'{"resourceType":"Patient","id":"fz-p1","birthDate":"0000"}',
    b"resourceType=Patient&id=fz-p1",
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (tuple of keys/indexes) to a value inside `node`."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key))


def weighted(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int) -> Any:
    """`common` usually, `rare` about once in `one_in` draws."""
    return st.integers(1, one_in).flatmap(lambda n: rare if n == 1 else common)


def odd(draw: st.DrawFn) -> Any:
    """A fresh copy of a nasty value (later mutations must not change the shared ones)."""
    return copy.deepcopy(draw(NASTY_VALUES))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one to three random mutations."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        where = list(paths(doc))
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["drop", "set", "set", "wrap", "stringify", "sibling"]))
        if action == "drop":
            del parent[key]
        elif action == "set":
            parent[key] = odd(draw)
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif action == "stringify":
            parent[key] = json.dumps(parent[key])
        elif isinstance(parent, dict):
            sibling = draw(st.sampled_from(["_" + str(key), "extension", "unknown", "id"]))
            parent[sibling] = odd(draw)
        else:
            parent.append(odd(draw))
    return doc


def dumps(value: Any) -> bytes:
    """JSON text for any Python value (big ints and lone surrogates included)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def natural_base(type_: str, id_: str, shape: str, method: str) -> Any:
    """The document a well-behaved client would send to this URL."""
    if shape == "/fhir":
        return BUNDLE
    if method == "PATCH":
        return JSON_PATCH if len(id_) % 2 else FHIRPATH_PATCH
    seed = next((s for s in SEEDS if s["resourceType"] == type_), None)
    if seed is None:
        return PATIENT
    if shape.endswith("$validate") and len(id_) % 2:
        return {**VALIDATE_PARAMETERS, "parameter": [{"name": "resource", "resource": seed}]}
    return {**seed, "id": id_}


@st.composite
def bodies(draw: st.DrawFn, natural: Any) -> tuple[bytes | None, str]:
    """A body (often `natural` with some damage) and the Content-Type that would suit it."""
    kind = draw(st.sampled_from(["none", "bytes", "raw", "json", *["valid"] * 3, *["mutated"] * 6]))
    if kind == "none":
        return None, "application/fhir+json"
    if kind == "bytes":
        return draw(st.binary(max_size=200)), "application/fhir+json"
    if kind == "raw":
        return draw(st.sampled_from(RAW_BODIES)), "application/fhir+json"
    if kind == "json":
        return dumps(draw(json_values)), "application/fhir+json"
    base = draw(weighted(st.just(natural), st.sampled_from(BASES), 4))
    doc = base if kind == "valid" else draw(mutated(base))
    fits = "application/json-patch+json" if isinstance(base, list) else "application/fhir+json"
    return dumps(doc), fits


@dataclass
class FuzzRequest:
    method: str
    path: str
    target: str | None  # "Type/id" of a seeded resource this request addresses, if any
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def __str__(self) -> str:
        body = None if self.body is None else self.body[:300]
        return (
            f"{self.method} {self.path} params={self.params!r} headers={self.headers!r} "
            f"body={body!r}"
        )


def segment(text: str) -> str:
    return quote(text, safe="")


#: path shapes and the methods the server routes for each
SHAPES: dict[str, tuple[str, ...]] = {
    "/fhir/{t}": METHODS,
    "/fhir/{t}/{i}": ("GET", "PUT", "DELETE", "PATCH"),
    "/fhir/{t}/{i}/_history": ("GET",),
    "/fhir/{t}/{i}/_history/{v}": ("GET",),
    "/fhir/{t}/_history": ("GET",),
    "/fhir/_history": ("GET",),
    "/fhir/{t}/$validate": ("POST",),
    "/fhir/{t}/{i}/$validate": ("POST",),
    "/fhir/{t}/_search": ("POST",),
    "/fhir": ("GET", "POST"),
}
ODD_SHAPES = (
    "/fhir/metadata", "/fhir/{t}/{i}/{v}", "/fhir/{t}/{i}/_history/{v}/x", "/fhir/{t}/$everything",
    "/fhir/$validate", "/fhir/_search", "/{t}", "/healthz", "/fhir/{t}/", "/fhir//{i}",
)  # fmt: skip
OPTIONAL_HEADERS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("Accept", ACCEPTS, 5),
    ("If-Match", ETAGS, 4),
    ("If-None-Match", ETAGS, 6),
    ("If-Modified-Since", DATES, 8),
    ("Prefer", PREFERS, 4),
    ("If-None-Exist", ("identifier=http://example.org/mrn|fz-1", "_id=fz-p1", "name=", "&&"), 5),
)


PARAM = st.tuples(
    weighted(st.sampled_from(PARAM_NAMES), any_text, 6),
    weighted(st.sampled_from(PARAM_VALUES), any_text, 6),
)


@st.composite
def requests(draw: st.DrawFn) -> FuzzRequest:
    common = st.sampled_from([*SHAPES, *["/fhir/{t}", "/fhir/{t}/{i}"] * 3])
    shape = draw(weighted(common, st.sampled_from(ODD_SHAPES), 8))
    routed = st.sampled_from(SHAPES.get(shape, METHODS))
    method = draw(weighted(routed, st.sampled_from(METHODS), 8))
    type_ = draw(
        weighted(st.sampled_from(SEEDED_TYPES), st.sampled_from(TYPES + BAD_TYPES) | any_text, 6)
    )
    id_ = draw(
        weighted(
            st.sampled_from(KNOWN_IDS),
            st.sampled_from(IDS) | st.from_regex(r"[A-Za-z0-9.\-]{1,66}", fullmatch=True),
            4,
        )
    )
    vid = draw(weighted(st.sampled_from(["1", "2"]), st.sampled_from(VIDS) | ascii_text, 3))
    path = shape.format(t=segment(type_), i=segment(id_), v=segment(vid))
    target = None
    if "{i}" in shape and type_ in SEEDED_TYPES and id_ in KNOWN_IDS:
        target = f"{type_}/{id_}"
    params = draw(weighted(st.just([]), st.lists(PARAM, min_size=1, max_size=4), 2))
    body, content_type = draw(bodies(natural_base(type_, id_, shape, method)))
    if shape.endswith("_search") and draw(st.integers(1, 4)) > 1:
        body, content_type = urlencode(draw(st.lists(PARAM))).encode(), FORM
    if method in ("GET", "DELETE") and draw(st.integers(1, 4)) > 1:
        body = None
    headers: dict[str, str] = {}
    if body is not None or draw(st.integers(1, 4)) == 1:
        rare_type = st.sampled_from(CONTENT_TYPES) | ascii_text
        headers["Content-Type"] = draw(weighted(st.just(content_type), rare_type, 6))
    for name, choices, one_in in OPTIONAL_HEADERS:
        if draw(st.integers(1, one_in)) == 1:
            headers[name] = draw(weighted(st.sampled_from(choices), ascii_text, 4))
    return FuzzRequest(method, path, target, params, headers, body)


def outcome_problems(response: Any) -> list[str]:
    """What is wrong with an error response (it must be a JSON OperationOutcome)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return [f"error body is not JSON: {response.content[:200]!r}"]
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return [f"error body is not an OperationOutcome: {response.content[:200]!r}"]
    issues = body.get("issue")
    if not isinstance(issues, list) or not any(
        isinstance(i, dict) and i.get("severity") and i.get("code") and i.get("diagnostics")
        for i in issues
    ):
        return [f"no issue has severity, code and diagnostics: {response.content[:300]!r}"]
    if "json" not in response.headers.get("content-type", ""):
        return [f"error Content-Type {response.headers.get('content-type')!r}"]
    return []


Call = Callable[..., httpx.Response]


def history_total(call: Call) -> int:
    r = call("GET", "/fhir/_history", params={"_count": "0"})
    assert r.status_code == 200, r.text
    value: int = r.json()["total"]
    return value


def snapshot(call: Call, key: str) -> tuple[int, bytes]:
    r = call("GET", f"/fhir/{key}")
    return r.status_code, r.content


def test_bad_input_never_breaks_the_server(app: Starlette) -> None:
    # Hypothesis drives a synchronous function; requests reach the in-process app through a
    # blocking portal (an event loop in a helper thread), as Starlette's TestClient does.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    )
    with anyio.from_thread.start_blocking_portal() as portal:

        def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
            return portal.call(partial(client.request, method, url, **kwargs))

        for seed in SEEDS:
            r = call("PUT", f"/fhir/{seed['resourceType']}/{seed['id']}", json=seed)
            assert r.status_code == 201, r.text
        state = {"total": history_total(call)}
        keys = [f"{type_}/{id_}" for type_ in SEEDED_TYPES for id_ in KNOWN_IDS]
        targets = {key: snapshot(call, key) for key in keys}

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests())
        def run(req: FuzzRequest) -> None:
            response = call(
                req.method, req.path, params=req.params, headers=req.headers, content=req.body
            )
            status = response.status_code
            problems: list[str] = []
            if status >= 500 and status != 501:  # 501: a FHIR feature not implemented yet
                problems.append(f"status {status}: {response.text[:300]}")
            if status >= 400:
                problems.extend(outcome_problems(response))
            total, before_total = history_total(call), state["total"]
            if status >= 400:  # nothing written anywhere, the addressed resource unchanged
                if total != before_total:
                    problems.append(
                        f"a failed request wrote: history total {before_total}->{total}"
                    )
                if req.target is not None and (after := snapshot(call, req.target)) != (
                    before := targets[req.target]
                ):
                    problems.append(f"it changed {req.target}: {before!r:.200} -> {after!r:.200}")
            elif total != before_total:  # something was written: take new snapshots
                targets.update((key, snapshot(call, key)) for key in targets)
            state["total"] = total
            assert not problems, f"{req}\n -> " + "\n -> ".join(problems)

        try:
            run()
        finally:
            portal.call(client.aclose)
