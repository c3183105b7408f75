"""Compiles R4 SearchParameter FHIRPath expressions into fast, typed Python closures.

Search indexing evaluates every parameter of a resource's type on every write, so a general
FHIRPath interpreter is too slow. R4's expressions use a tiny subset (paths, unions, choice
types, `as`/`ofType`, simple `where` filters, `extension(url)`, `resolve() is X`), which we
compile once into chains of list -> list steps, guided by the element definitions:

* every result branch has a static FHIR type (`Observation.effective` becomes four branches:
  `effectiveDateTime` as dateTime, `effectivePeriod` as Period, ...), so the indexer knows how
  to turn each value into index rows without sniffing its shape;
* JSON arrays flatten as FHIRPath collections do; `null`s in primitive arrays are dropped.

Differences from full FHIRPath, on purpose: `|` does not remove duplicates (the indexer keeps
sets of rows), `resolve() is X` is decided from the reference text (type segment of a relative
or absolute URL, else `Reference.type`) since nothing is fetched, and System type names in
`as()` (`DateTime`) also match their FHIR primitive (`dateTime`), which is what the R4
composite definitions mean. Expressions outside the subset fall back to fhirpathpy, compiled
once; `coverage()` reports how many compile natively.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from carebase.fhir.definitions.loader import Definitions, get_definitions
from carebase.fhir.search_expression_parser import Node, UnsupportedExpression, parse
from carebase.fhir.search_expression_steps import (
    Step,
    chain,
    child_step,
    filter_step,
    fp_equal,
    reference_is,
    slice_step,
)
from carebase.fhir.search_expression_types import TypeModel

log = logging.getLogger(__name__)

#: run(focus) -> values; focus is the input collection ([resource] for a whole expression,
#: [composite root value] for a composite component)
Runner = Callable[[list[Any]], list[Any]]
_ABSTRACT_ROOTS = ("Resource", "DomainResource")


class Branch(NamedTuple):
    """One statically typed part of an expression's result.

    `type` is a FHIR type code (`CodeableConcept`, `dateTime`), a backbone path
    (`Observation.component`), `boolean` for boolean expressions, or `*` for fallback results
    of unknown type. `system` is the code system of a `code` element bound to exactly one
    system (so `status` tokens can carry it), else None.

    `head`/`rest` split `run` for callers that dispatch on the focus's JSON keys (the
    indexer): when `head` is (key, is primitive), `run(focus)` equals `rest` applied to the
    flattened `focus[i][key]` values (`rest` None: those values as they are).
    `from_resource`: the branch starts at `%resource`, so callers pass [resource] as focus.
    """

    run: Runner
    type: str
    system: str | None = None
    head: tuple[str, bool] | None = None
    rest: Runner | None = None
    from_resource: bool = False


class _Partial(NamedTuple):
    """A branch while compiling: its steps so far and where it starts."""

    steps: tuple[Step, ...]
    type: str
    from_resource: bool = False
    system: str | None = None
    head: tuple[str, bool] | None = None  # the first child step, kept apart (see Branch)


class CompiledExpression:
    """A compiled expression: call it with a resource to get the list of matching values."""

    __slots__ = ("base", "branches", "expression", "native")

    def __init__(self, expression: str, base: str, branches: tuple[Branch, ...], native: bool):
        self.expression = expression
        self.base = base
        self.branches = branches
        self.native = native

    def __call__(self, resource: dict[str, Any]) -> list[Any]:
        focus = [resource]
        out: list[Any] = []
        for branch in self.branches:
            out.extend(branch.run(focus))
        return out

    def evaluate(self, focus: list[Any], resource: dict[str, Any]) -> list[Any]:
        """Values of a relative expression (a composite component) on `focus`."""
        out: list[Any] = []
        for branch in self.branches:
            out.extend(branch.run([resource] if branch.from_resource else focus))
        return out

    def typed(self, resource: dict[str, Any]) -> list[tuple[Any, str]]:
        """(value, FHIR type) pairs, for callers that need to know how to read each value."""
        focus = [resource]
        return [(v, b.type) for b in self.branches for v in b.run(focus)]


class _MultiBase:
    """An expression over several resource types, compiled per type on first use."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._by_type: dict[str, CompiledExpression] = {}

    def __call__(self, resource: dict[str, Any]) -> list[Any]:
        rtype = resource.get("resourceType", "")
        compiled = self._by_type.get(rtype)
        if compiled is None:
            compiled = self._by_type[rtype] = compile_for(self.expression, rtype)
        return compiled(resource)


def compile_expression(
    expr: str, base: str | None = None, focus_type: str | None = None
) -> CompiledExpression | _MultiBase:
    """Compile `expr` once; the result maps a resource dict to its list of values.

    `base` is the resource type the expression is evaluated on; without it the expression is
    compiled per `resourceType` on first use. `focus_type` compiles a relative expression (a
    composite component) evaluated on values of that type via `CompiledExpression.evaluate`.
    """
    if base is None:
        return _MultiBase(expr)
    return compile_for(expr, base, focus_type)


_cache: dict[tuple[str, str, str | None], CompiledExpression] = {}


def compile_for(expr: str, base: str, focus_type: str | None = None) -> CompiledExpression:
    """Like `compile_expression` with a known base type; cached per (expr, base, focus)."""
    key = (expr, base, focus_type)
    hit = _cache.get(key)
    if hit is None:
        hit = _cache[key] = _compile(expr, base, focus_type, get_definitions())
    return hit


def _compile(expr: str, base: str, focus_type: str | None, defs: Definitions) -> CompiledExpression:
    try:
        compiler = _Compiler(defs, base)
        start = _Partial((), focus_type or base)
        partials = compiler.nav(parse(expr), [start])
        branches = tuple(_finish(p) for p in partials)
        return CompiledExpression(expr, base, branches, True)
    except UnsupportedExpression as exc:
        log.debug("search expression %r on %s falls back to fhirpathpy: %s", expr, base, exc)
        return CompiledExpression(expr, base, (Branch(_fallback(expr), "*"),), False)


def _finish(p: _Partial) -> Branch:
    if p.head is None:
        return Branch(chain(p.steps), p.type, p.system, None, None, p.from_resource)
    run = chain((child_step(*p.head), *p.steps))
    rest = chain(p.steps) if p.steps else None
    return Branch(run, p.type, p.system, p.head, rest, p.from_resource)


class _Compiler:
    """Turns a parse tree into typed partial branches for one base resource type."""

    def __init__(self, defs: Definitions, base: str) -> None:
        self.defs = defs
        self.base = base
        self.types = TypeModel.shared(defs)

    def nav(self, node: Node, focus: list[_Partial]) -> list[_Partial]:
        kind = node[0]
        if kind == "name":
            name = node[1]
            if name[:1].isupper() and self.defs.is_type(name):
                # a leading type name filters the focus by type (`Observation.code`)
                return [p for p in focus if p.type == name or name in _ABSTRACT_ROOTS]
            return [c for p in focus for c in self.child(p, name)]
        if kind == "child":
            return [c for p in self.nav(node[1], focus) for c in self.child(p, node[2])]
        if kind == "union":
            return self.nav(node[1], focus) + self.nav(node[2], focus)
        if kind == "as":
            return self.of_type(self.nav(node[1], focus), node[2])
        if kind == "var" and node[1] == "resource":
            return [_Partial((), self.base, from_resource=True)]
        if kind == "index":
            inner = self.nav(node[1], focus)
            if len(inner) > 1:
                raise UnsupportedExpression("indexing a multi-typed collection")
            return [p._replace(steps=(*p.steps, slice_step(node[2]))) for p in inner]
        if kind == "call":
            return self.call(node, focus)
        if kind in ("and", "eq", "ne"):
            return [self.boolean(node, focus)]
        raise UnsupportedExpression(f"{kind} in a path")

    def call(self, node: Node, focus: list[_Partial]) -> list[_Partial]:
        _, target, fn, args = node
        inner = focus if target is None else self.nav(target, focus)
        if fn == "where" and len(args) == 1:
            return [
                p._replace(steps=(*p.steps, filter_step(self.predicate(args[0], p.type))))
                for p in inner
            ]
        if fn in ("as", "ofType") and len(args) == 1 and args[0][0] == "type":
            return self.of_type(inner, args[0][1])
        if fn == "extension" and len(args) == 1 and args[0][0] == "str":
            url = args[0][1]
            exts = [c for p in inner for c in self.child(p, "extension")]
            pred = _url_is(url)
            return [p._replace(steps=(*p.steps, filter_step(pred))) for p in exts]
        if fn == "first" and not args:
            if len(inner) > 1:
                raise UnsupportedExpression("first() of a multi-typed collection")
            return [p._replace(steps=(*p.steps, slice_step(0))) for p in inner]
        if fn in ("exists", "empty") and not args:
            return [self.boolean(node, focus)]
        raise UnsupportedExpression(f"function {fn}()")

    def child(self, p: _Partial, name: str) -> list[_Partial]:
        out = []
        for key, ctype, primitive, system in self.types.child(p.type, name):
            if not p.steps and p.head is None:
                out.append(_Partial((), ctype, p.from_resource, system, (key, primitive)))
            else:
                steps = (*p.steps, child_step(key, primitive))
                out.append(_Partial(steps, ctype, p.from_resource, system, p.head))
        return out

    def of_type(self, partials: list[_Partial], type_name: str) -> list[_Partial]:
        wanted = {type_name, self.defs.resolve_type(type_name)}
        if type_name[:1].isupper() and type_name[1:2].islower():
            # System.DateTime / System.String ... stand for the FHIR primitive here
            wanted.add(type_name[0].lower() + type_name[1:])
        return [p for p in partials if self._is_a(p.type, wanted)]

    def _is_a(self, type_key: str, wanted: set[str]) -> bool:
        # FHIRPath type tests follow specialisation: canonical is a uri, Age is a Quantity
        name: str | None = type_key
        while name is not None and name not in ("Element", "Base"):
            if name in wanted:
                return True
            name = self.defs.base_type(name)
        return False

    # ---------------------------------------------------------------- boolean expressions

    def predicate(self, cond: Node, item_type: str) -> Callable[[Any], bool]:
        """A filter for `where(cond)` evaluated on one item of type `item_type`."""
        if cond[0] == "is" and cond[1] == ("call", None, "resolve", []):
            if item_type != "Reference":
                raise UnsupportedExpression(f"resolve() on {item_type}")
            target = cond[2]
            return lambda node: reference_is(node, target)
        if (
            cond[0] == "call"
            and cond[1] is None
            and cond[2] == "hasExtension"
            and len(cond[3]) == 1
            and cond[3][0][0] == "str"
        ):
            has = _url_is(cond[3][0][1])
            return lambda node: any(has(e) for e in node.get("extension", ()))
        test = self.test(cond, [_Partial((), item_type)])
        return lambda node: test([node]) is True

    def boolean(self, node: Node, focus: list[_Partial]) -> _Partial:
        """A branch yielding [True]/[False]/[] for a boolean expression on the focus."""
        test = self.test(node, focus)

        def step(nodes: list[Any]) -> list[Any]:
            value = test(nodes)
            return [] if value is None else [value]

        return _Partial((step,), "boolean")

    def test(self, node: Node, focus: list[_Partial]) -> Callable[[list[Any]], bool | None]:
        """Three-valued FHIRPath logic (None = empty) over the focus collection."""
        kind = node[0]
        if kind == "and":
            left, right = self.test(node[1], focus), self.test(node[2], focus)

            def both(nodes: list[Any]) -> bool | None:
                a, b = left(nodes), right(nodes)
                if a is False or b is False:
                    return False
                return None if a is None or b is None else True

            return both
        if kind in ("eq", "ne"):
            lhs, lit = node[1], node[2]
            if lit[0] not in ("str", "num", "bool"):
                raise UnsupportedExpression("comparison with a non-literal")
            values = self.values(lhs, focus)
            literal, negate = lit[1], kind == "ne"

            def compare(nodes: list[Any]) -> bool | None:
                got = values(nodes)
                if not got:
                    return None
                equal = len(got) == 1 and fp_equal(got[0], literal)
                return equal != negate

            return compare
        if kind == "call" and node[2] in ("exists", "empty") and not node[3]:
            values = self.values(node[1], focus) if node[1] is not None else _identity
            want = node[2] == "exists"
            return lambda nodes: bool(values(nodes)) == want
        raise UnsupportedExpression(f"{kind} as a condition")

    def values(self, node: Node, focus: list[_Partial]) -> Callable[[list[Any]], list[Any]]:
        partials = self.nav(node, focus)
        if any(p.from_resource for p in partials):
            raise UnsupportedExpression("%resource inside a condition")
        branches = [_finish(p) for p in partials]

        def run(nodes: list[Any]) -> list[Any]:
            out: list[Any] = []
            for b in branches:
                out.extend(b.run(nodes))
            return out

        return run


def _identity(nodes: list[Any]) -> list[Any]:
    return nodes


def _url_is(url: str) -> Callable[[Any], bool]:
    return lambda node: node.get("url") == url


# -------------------------------------------------------------------- fhirpathpy fallback

_RESOLVE_IS = re.compile(r"resolve\(\)\s+is\s+([A-Za-z]+)")
_ID = "[A-Za-z0-9.-]{1,64}"


def rewrite_resolve(expr: str) -> str:
    """Replace `resolve() is X` (which fhirpathpy cannot run) by a test on the reference text.

    Mirrors `search_expression_steps.reference_is`: the reference's type segment, else
    `Reference.type` when there is no reference text.
    """

    def repl(m: re.Match[str]) -> str:
        t = m.group(1)
        pattern = f"^(.+/)?{t}/{_ID}(/_history/{_ID})?$"
        return f"(reference.matches('{pattern}') or (reference.empty() and type = '{t}'))"

    return _RESOLVE_IS.sub(repl, expr)


def _fallback(expr: str) -> Runner:
    import fhirpathpy
    from fhirpathpy.models import models

    fn = fhirpathpy.compile(rewrite_resolve(expr), models["r4"])

    def run(focus: list[Any]) -> list[Any]:
        # %resource is the focus itself: fallbacks only ever run on whole resources here
        out: list[Any] = []
        for node in focus:
            out.extend(plain(v) for v in fn(node, {"resource": node}) if v is not None)
        return out

    return run


def plain(value: Any) -> Any:
    """A fhirpathpy result as plain JSON data (Decimal -> float, FP types -> str)."""
    if value is None or isinstance(value, (str, bool, int, float, dict, list)):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value) if "." in str(value) else int(value)
    return str(value)


# -------------------------------------------------------------------- coverage


def coverage(
    defs: Definitions | None = None, types: Iterable[str] | None = None
) -> tuple[int, int, list[tuple[str, str, str]]]:
    """(native, fallback, [(type, code, expression) that fall back]) over all parameters.

    Counts each (resource type, parameter) with an expression, composite components included
    as part of their parameter (a parameter is native when its root and components are).
    """
    defs = defs or get_definitions()
    native = fallback = 0
    misses: list[tuple[str, str, str]] = []
    for rtype in sorted(types or defs.resource_types):
        params: Mapping[str, Any] = defs.search_params(rtype)
        for code, sp in params.items():
            if not sp.expression or sp.type == "special":
                continue
            compiled = compile_for(sp.expression, rtype)
            ok = compiled.native
            for _c, cexpr in sp.components:
                for b in compiled.branches:
                    ok = ok and compile_for(cexpr, rtype, b.type).native
            if ok:
                native += 1
            else:
                fallback += 1
                misses.append((rtype, code, sp.expression))
    return native, fallback, misses
