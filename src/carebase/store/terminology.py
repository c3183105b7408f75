"""Value sets and code systems held by the server, for the `:in`, `:not-in`, `:above` and
`:below` token search modifiers.

`Terminology(store)` reads ValueSet and CodeSystem resources through `store.search` when a
query is built. It caches parsed CodeSystems by resource id and version only, so one instance
may live as long as its store (better: they are parsed once) and always sees the current
resources.

- `expand(reference)`: the codes of a ValueSet given by canonical URL (`url` or
  `url|version`) or literal reference (`ValueSet/id`). A stored `expansion` is used when it is
  complete; otherwise `compose` is evaluated: `include` of listed concepts, of whole code
  systems, of `filter`s over a CodeSystem held by the server, of imported value sets (with a
  cycle guard), minus `exclude`. A whole system whose CodeSystem is not held means "any code
  of that system".
- `subsumption(system, code, direction)`: the code with its descendants (`below`) or
  ancestors (`above`) in a held CodeSystem; hierarchy from nested `concept`s and from
  `parent`/`child` properties.

Results are `CodeSet`s. Errors are `BadRequest` (unknown value set, unusable definition,
CodeSystem not held) and `TooCostly` (over `MAX_CODES` codes) without a location: the search
code adds the parameter's name.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Literal

from carebase.errors import BadRequest, TooCostly
from carebase.fhir.json_io import loads
from carebase.store.base import Store, StoredResource, every_match
from carebase.store.index_values import escape_part

#: the most codes one expansion (or subsumption) may have
MAX_CODES = 10_000
#: the most CodeSystem resources searched for a code given without its system
MAX_SCANNED_CODE_SYSTEMS = 1_000
_PAGE = 100
#: parsed CodeSystems kept per Terminology (each keyed by resource id and version)
_CACHED_CODE_SYSTEMS = 32
_PARENT_URI = "http://hl7.org/fhir/concept-properties#parent"
_CHILD_URI = "http://hl7.org/fhir/concept-properties#child"
_FILTER_OPS = frozenset(
    {"=", "is-a", "descendent-of", "is-not-a", "regex", "in", "not-in", "generalizes", "exists"}
)
Direction = Literal["above", "below"]
Code = tuple[str | None, str]


def _too_many(what: str) -> TooCostly:
    return TooCostly(
        f"{what} has more than {MAX_CODES:,} codes, more than this server expands in a search"
    )


@dataclass(frozen=True, slots=True)
class CodeSet:
    """A set of (system, code) pairs: `codes` listed one by one, plus `open_systems`, systems
    of which any code is a member except the excluded ones (system -> excluded codes)."""

    codes: frozenset[Code] = frozenset()
    open_systems: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.codes) > MAX_CODES:
            raise _too_many("The expansion")

    @classmethod
    def any_code_of(cls, system: str) -> CodeSet:
        """Every code of `system`."""
        return cls(frozenset(), {system: frozenset()})

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        excluded = self.open_systems.get(item[0])
        return item[1] not in excluded if excluded is not None else item in self.codes

    def _listed(self, system: str) -> frozenset[str]:
        return frozenset(c for s, c in self.codes if s == system)

    def __or__(self, other: CodeSet) -> CodeSet:
        opened: dict[str, frozenset[str]] = {}
        for system in self.open_systems.keys() | other.open_systems.keys():
            mine, theirs = self.open_systems.get(system), other.open_systems.get(system)
            if mine is not None and theirs is not None:
                opened[system] = mine & theirs
            else:  # open on one side: what it excludes, unless the other side lists it
                listed = (other if mine is not None else self)._listed(system)
                opened[system] = (mine if mine is not None else theirs or frozenset()) - listed
        codes = {x for x in self.codes | other.codes if x[0] not in opened}
        return CodeSet(frozenset(codes), opened)

    def __and__(self, other: CodeSet) -> CodeSet:
        opened = {
            s: self.open_systems[s] | other.open_systems[s]
            for s in self.open_systems.keys() & other.open_systems.keys()
        }
        codes = {x for x in self.codes if x in other} | {x for x in other.codes if x in self}
        return CodeSet(frozenset(x for x in codes if x[0] not in opened), opened)

    def __sub__(self, other: CodeSet) -> CodeSet:
        codes = {x for x in self.codes if x not in other}
        opened: dict[str, frozenset[str]] = {}
        for system, excluded in self.open_systems.items():
            if system in other.open_systems:  # left: what the other excludes, we do not
                codes |= {(system, c) for c in other.open_systems[system] - excluded}
            else:
                opened[system] = excluded | other._listed(system)
        return CodeSet(frozenset(codes), opened)


class CodeSystemView:
    """One CodeSystem resource read for its codes, properties and hierarchy."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.url: str = resource.get("url", "")
        self.version: str | None = resource.get("version")
        parent_prop, child_prop = "parent", "child"
        for prop in resource.get("property", ()):
            if prop.get("uri") == _PARENT_URI:
                parent_prop = prop.get("code", parent_prop)
            elif prop.get("uri") == _CHILD_URI:
                child_prop = prop.get("code", child_prop)
        self.parent_property, self.child_property = parent_prop, child_prop
        #: code -> its concept (children removed from view: read `children`)
        self.concepts: dict[str, dict[str, Any]] = {}
        self.children: dict[str, set[str]] = {}
        self.parents: dict[str, set[str]] = {}
        self._read(resource.get("concept", ()), None)

    def _link(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, set()).add(child)
        self.parents.setdefault(child, set()).add(parent)

    def _read(self, concepts: Iterable[dict[str, Any]], parent: str | None) -> None:
        for concept in concepts:
            code = concept.get("code")
            if not isinstance(code, str):
                continue
            self.concepts[code] = concept
            if parent is not None:
                self._link(parent, code)
            for value in self.property_values(code, self.parent_property):
                self._link(value, code)
            for value in self.property_values(code, self.child_property):
                self._link(code, value)
            self._read(concept.get("concept", ()), code)

    def property_values(self, code: str, prop: str) -> list[str]:
        """The values of a concept's property, as text (booleans `true`/`false`)."""
        out = []
        for entry in self.concepts.get(code, {}).get("property", ()):
            if entry.get("code") != prop:
                continue
            for key, value in entry.items():
                if key == "valueCoding" and isinstance(value, dict):
                    out.append(str(value.get("code")))
                elif key.startswith("value") and isinstance(value, bool):
                    out.append("true" if value else "false")
                elif key.startswith("value"):
                    out.append(str(value))
        return out

    def _closure(self, code: str, links: dict[str, set[str]]) -> set[str]:
        seen = {code} if code in self.concepts else set()
        todo = [code]
        while todo:
            for nxt in links.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def descendants_or_self(self, code: str) -> set[str]:
        """`code` (when defined here) and every code below it."""
        return self._closure(code, self.children)

    def ancestors_or_self(self, code: str) -> set[str]:
        """`code` (when defined here) and every code above it."""
        return self._closure(code, self.parents)

    def all_codes(self) -> set[str]:
        """Every code defined here (TooCostly beyond `MAX_CODES`)."""
        if len(self.concepts) > MAX_CODES:
            raise _too_many(f"CodeSystem '{self.url}'")
        return set(self.concepts)

    def _values(self, code: str, prop: str) -> list[str]:
        if prop in ("concept", "code"):
            return [code]
        if prop == "display":
            display = self.concepts[code].get("display")
            return [display] if isinstance(display, str) else []
        if prop == self.parent_property:
            return sorted(self.parents.get(code, ()))
        if prop == self.child_property:
            return sorted(self.children.get(code, ()))
        return self.property_values(code, prop)

    def filter(self, op: str, prop: str, value: str) -> set[str]:
        """The codes passing one ValueSet `compose.include.filter`."""
        if op == "is-a":
            return self.descendants_or_self(value)
        if op == "descendent-of":
            return self.descendants_or_self(value) - {value}
        if op == "generalizes":
            return self.ancestors_or_self(value)
        if op == "is-not-a":
            return self.all_codes() - self.descendants_or_self(value)
        if op == "=":
            return {c for c in self.concepts if value in self._values(c, prop)}
        if op in ("in", "not-in"):
            wanted = {v.strip() for v in value.split(",")}
            hits = {c for c in self.concepts if wanted.intersection(self._values(c, prop))}
            return hits if op == "in" else self.all_codes() - hits
        if op == "exists":
            if value not in ("true", "false"):
                raise BadRequest(
                    f"the 'exists' filter on '{prop}' needs the value true or false, not '{value}'"
                )
            return {c for c in self.concepts if bool(self._values(c, prop)) == (value == "true")}
        try:  # regex
            pattern = re.compile(value)
        except re.error as exc:
            raise BadRequest(f"the regex filter '{value}' is not a valid pattern: {exc}") from None
        return {
            c for c in self.concepts if any(pattern.fullmatch(v) for v in self._values(c, prop))
        }


class Terminology:
    """ValueSet expansion and CodeSystem subsumption over the resources held by `store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: (id, version) -> the parsed CodeSystem (None: content not-present), newest last
        self._views: OrderedDict[tuple[str, int], CodeSystemView | None] = OrderedDict()

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        """The store's SQL dialect (for how a long list of codes is bound)."""
        return self.store.dialect

    # --- reading held resources ------------------------------------------------------------
    def _newest(self, type_: str, params: list[tuple[str, str]]) -> StoredResource | None:
        """The newest matching resource (several versions of one canonical may be held):
        the last updated, and of those written at once, the last stored."""
        entries = self.store.search(type_, params, count=_PAGE, total="none").entries
        if not entries:
            return None
        return max(enumerate(entries), key=lambda pair: (pair[1].last_updated, pair[0]))[1]

    def _canonical(self, type_: str, url: str, version: str | None) -> StoredResource | None:
        params = [("url", escape_part(url))]
        if version:
            params.append(("version", escape_part(version)))
        return self._newest(type_, params)

    def value_set(self, reference: str) -> dict[str, Any]:
        """The ValueSet `url`, `url|version` or `ValueSet/id` held here (else BadRequest)."""
        parts = reference.split("/")
        if len(parts) == 2 and parts[0] == "ValueSet" and parts[1]:
            found = self._newest("ValueSet", [("_id", escape_part(parts[1]))])
        else:
            url, _, version = reference.partition("|")
            found = self._canonical("ValueSet", url, version or None)
        if found is None or found.body is None:
            raise BadRequest(
                f"the value set '{reference}' is not held by this server (store it as a "
                "ValueSet resource to search with it)"
            )
        resource: dict[str, Any] = loads(found.body)
        return resource

    def _view(self, stored: StoredResource) -> CodeSystemView | None:
        """A stored CodeSystem read for its concepts (None when they are not present)."""
        key = (stored.id, stored.version)
        if key in self._views:
            self._views.move_to_end(key)
            return self._views[key]
        resource = loads(stored.body) if stored.body is not None else {}
        view = CodeSystemView(resource) if resource.get("content") != "not-present" else None
        self._views[key] = view
        if len(self._views) > _CACHED_CODE_SYSTEMS:
            self._views.popitem(last=False)
        return view

    def code_system(self, url: str, version: str | None = None) -> CodeSystemView | None:
        """The CodeSystem `url` (at `version`) held here with its concepts, else None
        (also when the held resource leaves its concepts out: content `not-present`)."""
        found = self._canonical("CodeSystem", url, version)
        return self._view(found) if found is not None else None

    def _all_code_systems(self) -> Iterator[CodeSystemView]:
        for seen, entry in enumerate(every_match(self.store, "CodeSystem", [], _PAGE), 1):
            if seen > MAX_SCANNED_CODE_SYSTEMS:
                raise TooCostly(
                    f"more than {MAX_SCANNED_CODE_SYSTEMS:,} CodeSystems are held: give the "
                    "code with its system (system|code)"
                )
            view = self._view(entry)
            if view is not None:
                yield view

    # --- the operations ----------------------------------------------------------------------
    def expand(self, reference: str) -> CodeSet:
        """The codes of a held value set (`url`, `url|version` or `ValueSet/id`)."""
        return _Expansion(self).value_set(reference, ())

    def subsumption(self, system: str | None, code: str, direction: Direction) -> CodeSet:
        """`code` with its descendants (`below`) or ancestors (`above`) in `system`'s held
        CodeSystem; with `system` None, in every held CodeSystem defining `code`."""
        if system is not None:
            held = self.code_system(system)
            if held is None:
                raise BadRequest(
                    f"the code system '{system}' is not held by this server: :{direction} "
                    "needs its CodeSystem resource (with its concepts) to know the hierarchy"
                )
            systems = [held]
        else:
            systems = [cs for cs in self._all_code_systems() if code in cs.concepts]
            if not systems:
                raise BadRequest(
                    f"no CodeSystem held by this server defines the code '{code}': "
                    f":{direction} needs the CodeSystem resource to know the hierarchy"
                )
        out: set[Code] = set()
        for cs in systems:
            if code not in cs.concepts:
                raise BadRequest(f"the code '{code}' is not defined in CodeSystem '{cs.url}'")
            found = (
                cs.descendants_or_self(code) if direction == "below" else cs.ancestors_or_self(code)
            )
            out |= {(cs.url, c) for c in found}
        return CodeSet(frozenset(out))


class _Expansion:
    """One ValueSet expansion: reads code systems once each and guards against cycles."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self.systems: dict[tuple[str, str | None], CodeSystemView | None] = {}

    def code_system(self, url: str, version: str | None) -> CodeSystemView | None:
        key = (url, version)
        if key not in self.systems:
            self.systems[key] = self.terminology.code_system(url, version)
        return self.systems[key]

    def value_set(self, reference: str, stack: tuple[str, ...]) -> CodeSet:
        if reference in stack:
            chain = " -> ".join([*stack, reference])
            raise BadRequest(f"the value set '{reference}' imports itself ({chain})")
        resource = self.terminology.value_set(reference)
        expansion = resource.get("expansion")
        if expansion is not None and _complete(expansion):
            return CodeSet(frozenset(_contains(expansion.get("contains", ()))))
        compose = resource.get("compose")
        if not compose or not compose.get("include"):
            what = "an incomplete expansion" if expansion is not None else "no expansion"
            raise BadRequest(
                f"the value set '{reference}' has {what} and no compose.include to expand"
            )
        inner = (*stack, reference)
        result = reduce(
            CodeSet.__or__, (self.part(reference, inc, inner) for inc in compose["include"])
        )
        for exc in compose.get("exclude", ()):
            result = result - self.part(reference, exc, inner)
        return result

    def part(self, reference: str, item: dict[str, Any], stack: tuple[str, ...]) -> CodeSet:
        """One `include` or `exclude`: its system part and imported value sets, intersected."""
        sets: list[CodeSet] = []
        system = item.get("system")
        if system:
            sets.append(self.system_part(reference, system, item))
        sets.extend(self.value_set(url, stack) for url in item.get("valueSet", ()))
        if not sets:
            raise BadRequest(
                f"the value set '{reference}' has an include or exclude with neither a system "
                "nor a valueSet"
            )
        return reduce(CodeSet.__and__, sets)

    def system_part(self, reference: str, system: str, item: dict[str, Any]) -> CodeSet:
        concepts, filters = item.get("concept"), item.get("filter")
        listed = (
            CodeSet(frozenset((system, c["code"]) for c in concepts if c.get("code")))
            if concepts
            else None
        )
        if not filters:
            if listed is not None:
                return listed
            held = self.code_system(system, item.get("version"))
            if held is None:
                return CodeSet.any_code_of(system)
            return CodeSet(frozenset((system, c) for c in held.all_codes()))
        held = self.code_system(system, item.get("version"))
        if held is None:
            raise BadRequest(
                f"the value set '{reference}' filters code system '{system}', which is not "
                "held by this server: store its CodeSystem resource (with its concepts)"
            )
        codes: set[str] | None = None
        for f in filters:
            op, prop, value = f.get("op"), f.get("property"), f.get("value")
            if op not in _FILTER_OPS or not isinstance(prop, str) or not isinstance(value, str):
                raise BadRequest(
                    f"the value set '{reference}' has a filter on '{system}' that is not valid "
                    f"(op '{op}', property '{prop}', value '{value}')"
                )
            found = held.filter(op, prop, value)
            codes = found if codes is None else codes & found
        result = CodeSet(frozenset((system, c) for c in codes or ()))
        return result & listed if listed is not None else result


def _complete(expansion: dict[str, Any]) -> bool:
    """Whether a stored expansion lists every code (not one page of a larger one)."""
    total = expansion.get("total")
    if expansion.get("offset"):
        return False
    return total is None or total <= sum(1 for _ in _contains(expansion.get("contains", ())))


def _contains(items: Iterable[dict[str, Any]]) -> Iterator[Code]:
    for item in items:
        code = item.get("code")
        if isinstance(code, str):
            yield item.get("system"), code
        yield from _contains(item.get("contains", ()))
