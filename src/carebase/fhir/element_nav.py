"""Walking FHIR JSON with its definitions: which element (and type) a JSON key is.

FHIR JSON names choice elements by type (`valueQuantity` for `Observation.value[x]`) and keeps
primitive extensions in `_name` siblings, so a plain key lookup in the definitions is not
enough. `resolve_key` maps a JSON key, in the context of the element holding it, to its
`ElementDef`, the concrete type, and the context to use for that key's own children. Patch and
`_summary` both build on it. Tables are computed once per type and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from carebase.fhir.definitions.model import ElementDef

__all__ = [
    "Context",
    "Resolved",
    "child_context",
    "choice_keys",
    "element_for_name",
    "key_table",
    "resolve_key",
    "root_context",
]

# Element types whose children are defined inline under the element's own path.
_INLINE = frozenset({"BackboneElement", "Element"})


@dataclass(frozen=True, slots=True)
class Context:
    """Where a JSON object sits in the definitions: the defining type and the element path.

    A resource root is `Context("Patient", "Patient")`, a backbone element
    `Context("Patient", "Patient.contact")`, a data type `Context("HumanName", "HumanName")`.
    """

    type_name: str
    path: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """What one JSON key means: its definition, its concrete type, whether it is a choice."""

    element: ElementDef
    type_code: str  # the concrete type, e.g. "Quantity" for valueQuantity
    name: str  # the FHIR element name without type suffix, e.g. "value"
    is_choice: bool

    @property
    def repeats(self) -> bool:
        """True when the element is a list in JSON (max other than 0 or 1)."""
        return self.element.max not in ("0", "1")


def root_context(resource_type: str) -> Context:
    """The context of a resource's top-level object."""
    return Context(resource_type, resource_type)


def _elements(type_name: str) -> Mapping[str, ElementDef]:
    # Imported late so that merely importing this module does not load the definitions.
    from carebase.fhir.definitions.loader import get_definitions

    definitions = get_definitions()
    found = definitions.elements(type_name)
    if not found and definitions.is_type(type_name):
        # Profiles of a type (SimpleQuantity, MoneyQuantity) use their base's elements.
        found = definitions.elements(definitions.resolve_type(type_name))
    return found


def _suffix(type_code: str) -> str:
    """The JSON suffix for a type in a choice name: `string` -> `String`."""
    code = type_code.rsplit(".", 1)[-1]  # System.String and friends from FHIRPath type URLs
    return code[:1].upper() + code[1:]


@lru_cache(maxsize=4096)
def key_table(type_name: str, path: str) -> dict[str, Resolved]:
    """Every JSON key allowed directly under `path` (choice names expanded) for `type_name`."""
    table: dict[str, Resolved] = {}
    prefix = path + "."
    for element_path, element in _elements(type_name).items():
        if not element_path.startswith(prefix) or "." in element_path[len(prefix) :]:
            continue
        name = element_path[len(prefix) :]
        if name.endswith("[x]"):
            base = name[:-3]
            for type_code in element.types:
                table[base + _suffix(type_code)] = Resolved(element, type_code, base, True)
        else:
            type_code = element.types[0] if element.types else ""
            table[name] = Resolved(element, type_code, name, False)
    return table


def resolve_key(context: Context, key: str) -> Resolved | None:
    """The element a JSON key denotes under `context`, or None if the definitions lack it.

    `_name` keys (primitive extensions) resolve to the element `name` they extend.
    """
    table = key_table(context.type_name, context.path)
    found = table.get(key)
    if found is None and key.startswith("_"):
        found = table.get(key[1:])
    return found


@lru_cache(maxsize=4096)
def choice_keys(context: Context, name: str) -> tuple[str, ...]:
    """The JSON keys a choice element `name` may take (`value` -> valueQuantity, ...)."""
    table = key_table(context.type_name, context.path)
    return tuple(k for k, r in table.items() if r.is_choice and r.name == name)


def element_for_name(context: Context, name: str) -> Resolved | None:
    """The element called `name` (a FHIR name, choices without suffix) under `context`."""
    found = resolve_key(context, name)
    if found is not None:
        return found
    keys = choice_keys(context, name)
    return resolve_key(context, keys[0]) if keys else None


def child_context(context: Context, resolved: Resolved, value: Any = None) -> Context | None:
    """The context for the children of an element; None for leaves and unknown types.

    `value` (the JSON object itself) is only needed for contained resources, whose type is
    written in the data rather than in the definition.
    """
    element = resolved.element
    if element.content_reference:
        # "#Questionnaire.item": the element re-uses another element's definition.
        target = element.content_reference.split("#", 1)[-1]
        return Context(context.type_name, target)
    if resolved.type_code in _INLINE:
        return Context(context.type_name, element.path)
    if resolved.type_code == "Resource":
        if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
            return root_context(value["resourceType"])
        return None
    if not resolved.type_code or not resolved.type_code[:1].isupper():
        return None  # primitive types have no JSON children
    return Context(resolved.type_code, resolved.type_code)
