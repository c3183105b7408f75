"""Typed shapes of the generated R4 definitions (what the loader hands to the rest of the code)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One R4 SearchParameter as it applies to one resource type (multi-base params are split).

    `expression` keeps only the union branches of the official expression that apply to `base`
    (e.g. `clinical-patient` on Observation becomes `Observation.subject.where(resolve() is
    Patient)`); it is None for parameters without an expression (`_text`, `_content`, ...).
    """

    code: str  # the name used in URLs, e.g. "birthdate", "_id"
    base: str  # the resource type this instance applies to, e.g. "Patient"
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    expression: str | None
    url: str
    targets: tuple[str, ...] = ()  # reference target types
    #: composite components: (component parameter code, FHIRPath relative to the composite root)
    components: tuple[tuple[str, str], ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One element of a resource or data type.

    `path` is the element's path with choice types kept as `value[x]`; `types` lists the type
    codes allowed (for choice elements, several; for backbone elements "BackboneElement" or
    "Element"); `binding` holds the codes of a *required* binding (None when not required or
    when the value set cannot be expanded from the core package).
    """

    path: str
    types: tuple[str, ...]
    min: int
    max: str  # "1", "*", "0", ...
    binding: frozenset[str] | None = None
    binding_url: str | None = None
    content_reference: str | None = None  # e.g. "#Questionnaire.item"
    target_profiles: tuple[str, ...] = ()  # for Reference/canonical: allowed target types
    summary: bool = False  # isSummary: part of `_summary=true`
    #: code systems of the required binding's codes (Coding/CodeableConcept are only checked
    #: when their `system` is one of these)
    binding_systems: frozenset[str] = frozenset()
