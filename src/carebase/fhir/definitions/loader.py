"""Loads the generated R4 definitions (`*.json.gz` next to this module) into typed lookups.

The data comes from `tools/generate_definitions.py`, plus `extra_resources.json`: resource
types carebase serves that are not in R4 core (the SQL on FHIR ViewDefinition), hand-written
in the same shape. Loading reads three small gzip files once
(see `get_definitions`); per-type `ElementDef` and `SearchParam` maps are built on first use,
so start-up stays fast and types nobody touches cost nothing.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import orjson

from carebase.fhir.definitions.model import ElementDef, SearchParam

_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: search parameters defined on these abstract bases apply to every resource type below them
_ABSTRACT_BASES = ("Resource", "DomainResource")


def _read(name: str) -> Any:
    data = resources.files("carebase.fhir.definitions").joinpath(name).read_bytes()
    return orjson.loads(gzip.decompress(data) if name.endswith(".gz") else data)


class Definitions:
    """The R4 resource types, data types, elements, search parameters and Patient compartment."""

    resource_types: frozenset[str]
    primitive_types: frozenset[str]
    complex_types: frozenset[str]
    patient_compartment: Mapping[str, tuple[str, ...]]

    def __init__(
        self, elements: dict[str, Any], search_rows: list[list[Any]], compartments: dict[str, Any]
    ) -> None:
        self._types: dict[str, dict[str, Any]] = elements["types"]
        self._aliases: dict[str, str] = elements["aliases"]
        self._bindings: dict[str, dict[str, list[str]] | None] = elements["bindings"]
        kinds: dict[str, set[str]] = {"resource": set(), "primitive": set(), "complex": set()}
        for name, info in self._types.items():
            kinds[info["kind"]].add(name)
        self.resource_types = frozenset(kinds["resource"] - set(_ABSTRACT_BASES))
        self.primitive_types = frozenset(kinds["primitive"])
        self.complex_types = frozenset(kinds["complex"] | set(self._aliases))
        self.patient_compartment = MappingProxyType(
            {k: tuple(v) for k, v in compartments["patient"].items()}
        )
        self._search_rows: dict[str, list[list[Any]]] = {}
        for row in search_rows:
            self._search_rows.setdefault(row[1], []).append(row)
        self._element_cache: dict[str, Mapping[str, ElementDef]] = {}
        self._search_cache: dict[str, Mapping[str, SearchParam]] = {}
        self._binding_cache: dict[str, tuple[frozenset[str] | None, frozenset[str]]] = {}

    # ----------------------------------------------------------------- types and elements

    def resolve_type(self, type_name: str) -> str:
        """The specialization a type name stands for (`SimpleQuantity` -> `Quantity`)."""
        return self._aliases.get(type_name, type_name)

    def is_type(self, type_name: str) -> bool:
        """Whether `type_name` is any R4 resource or data type (including abstract bases)."""
        return self.resolve_type(type_name) in self._types

    def base_type(self, type_name: str) -> str | None:
        """The type this one specializes (`Patient` -> `DomainResource`, `Age` -> `Quantity`)."""
        info = self._types.get(self.resolve_type(type_name))
        return info["base"] if info else None

    def is_abstract(self, type_name: str) -> bool:
        """Whether the type is abstract (Resource, DomainResource, Element, BackboneElement)."""
        info = self._types.get(self.resolve_type(type_name))
        return bool(info and info["abstract"])

    def elements(self, type_name: str) -> Mapping[str, ElementDef]:
        """path -> ElementDef of a resource or data type, in snapshot order; unknown -> empty."""
        name = self.resolve_type(type_name)
        cached = self._element_cache.get(name)
        if cached is not None:
            return cached
        info = self._types.get(name)
        if info is None:
            return _EMPTY
        out: dict[str, ElementDef] = {}
        for path, types, min_, max_, summary, binding_url, content_ref, targets in info["elements"]:
            codes, systems = self._binding(binding_url)
            out[path] = ElementDef(
                path=path,
                types=tuple(types),
                min=min_,
                max=max_,
                binding=codes,
                binding_url=binding_url,
                content_reference=content_ref,
                target_profiles=tuple(targets),
                summary=bool(summary),
                binding_systems=systems,
            )
        result = MappingProxyType(out)
        self._element_cache[name] = result
        return result

    def _binding(self, url: str | None) -> tuple[frozenset[str] | None, frozenset[str]]:
        if url is None:
            return None, frozenset()
        cached = self._binding_cache.get(url)
        if cached is None:
            data = self._bindings.get(url)
            if data is None:
                cached = (None, frozenset())
            else:
                cached = (frozenset(data["codes"]), frozenset(data["systems"]))
            self._binding_cache[url] = cached  # shared: many elements bind the same value set
        return cached

    # ----------------------------------------------------------------- search parameters

    def search_params(self, type_: str) -> Mapping[str, SearchParam]:
        """code -> SearchParam for a resource type, including the Resource/DomainResource ones.

        Parameters inherited from Resource/DomainResource get `base` = `type_` and their
        expression re-rooted (`Resource.meta.tag` -> `Patient.meta.tag`). Unknown -> empty.
        """
        cached = self._search_cache.get(type_)
        if cached is not None:
            return cached
        if type_ not in self.resource_types and type_ not in _ABSTRACT_BASES:
            return _EMPTY
        chain = []
        name: str | None = type_
        while name is not None:
            chain.append(name)
            name = self._types[name]["base"] if name in self._types else None
        out: dict[str, SearchParam] = {}
        for base in reversed(chain):  # most specific last, so it wins a (never seen) clash
            for row in self._search_rows.get(base, ()):
                out[row[0]] = self._search_param(row, type_)
        result = MappingProxyType(out)
        self._search_cache[type_] = result
        return result

    def search_param(self, type_: str, code: str) -> SearchParam | None:
        """The search parameter `code` of `type_`, or None."""
        return self.search_params(type_).get(code)

    @staticmethod
    def _search_param(row: list[Any], type_: str) -> SearchParam:
        code, base, ptype, expression, url, targets, components, modifiers, comparators = row
        if base != type_ and expression is not None and expression.startswith(base + "."):
            expression = type_ + expression[len(base) :]
        return SearchParam(
            code=code,
            base=type_,
            type=ptype,
            expression=expression,
            url=url,
            targets=tuple(targets),
            components=tuple((c, e) for c, e in components),
            modifiers=tuple(modifiers),
            comparators=tuple(comparators),
        )


@functools.cache
def get_definitions() -> Definitions:
    """The process-wide Definitions (loaded on first call, then shared)."""
    elements, search_rows = _read("elements.json.gz"), _read("search_params.json.gz")
    extra = _read("extra_resources.json")
    elements["types"].update(extra["types"])
    search_rows.extend(extra["search_params"])
    return Definitions(elements, search_rows, _read("compartments.json.gz"))
