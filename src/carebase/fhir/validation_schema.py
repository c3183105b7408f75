"""Per-type lookup tables the validator walks, compiled once from the R4 definitions.

A `TypeTable` describes one JSON object shape: a resource, a data type, or a backbone element
(`Patient.contact`). It maps each allowed JSON key (with choice types expanded: `value[x]` ->
`valueString`, `valueQuantity`, ...) to a `FieldSpec` holding everything the validator needs
without further lookups. Tables are built lazily on first use and shared.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Final

from carebase.fhir.definitions.loader import Definitions
from carebase.fhir.definitions.model import ElementDef
from carebase.fhir.narrative import check_xhtml
from carebase.fhir.primitives import PRIMITIVE_CHECKS, PrimitiveCheck, check_string

PRIMITIVE: Final = 0
COMPLEX: Final = 1
RESOURCE: Final = 2

SPECIAL_NONE: Final = 0
SPECIAL_REFERENCE: Final = 1
SPECIAL_EXTENSION: Final = 2
SPECIAL_CODED: Final = 3


class FieldSpec:
    """One allowed JSON key of an object shape."""

    __slots__ = (
        "array",
        "binding",
        "binding_systems",
        "check",
        "group",
        "key",
        "kind",
        "max_n",
        "min",
        "special",
        "table",
        "targets",
        "type",
    )

    def __init__(self, key: str, type_: str, element: ElementDef, group: str | None) -> None:
        self.key = key
        self.type = type_
        self.group = group  # "value" for valueString etc.: only one key of a group may appear
        self.min = element.min
        self.array = element.max != "1"
        self.max_n: int | None = None if element.max in ("*", "1") else int(element.max)
        self.kind: int = COMPLEX
        self.check: PrimitiveCheck = check_string
        self.table: TypeTable | None = None
        self.special = SPECIAL_NONE
        self.binding: frozenset[str] | None = None
        self.binding_systems: frozenset[str] = frozenset()
        self.targets: frozenset[str] = frozenset()


class TypeTable:
    """The allowed keys, required keys and choice groups of one object shape."""

    __slots__ = ("choice_groups", "fields", "is_resource", "name", "required", "required_groups")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.is_resource = is_resource
        self.fields: dict[str, FieldSpec] = {}
        self.required: tuple[FieldSpec, ...] = ()
        #: choice element name (e.g. "value") -> all its JSON keys
        self.choice_groups: dict[str, tuple[str, ...]] = {}
        self.required_groups: tuple[str, ...] = ()


class Schema:
    """Compiles and caches TypeTables for the types of one `Definitions`."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self._tables: dict[str, TypeTable] = {}  # keyed by element path ("Patient.contact")
        self._ready: dict[str, TypeTable] = {}  # finished tables by type name
        self._lock = threading.RLock()
        self._children: dict[str, dict[str, list[ElementDef]]] = {}
        resource_types = definitions.resource_types
        self._resource_types = resource_types

    def table(self, type_name: str) -> TypeTable | None:
        """The table of a resource or complex data type; None for unknown/primitive types."""
        ready = self._ready.get(type_name)
        if ready is not None:
            return ready
        # Tables are registered half-built (for recursive shapes), so other threads only see
        # them through `_ready`, which is filled once the whole build has finished.
        with self._lock:
            table = self._table_locked(type_name)
            if table is not None:
                self._ready[type_name] = table
        return table

    def _table_locked(self, type_name: str) -> TypeTable | None:
        name = self.definitions.resolve_type(type_name)
        if name in self.definitions.primitive_types or not self.definitions.is_type(name):
            return None
        return self._tables.get(name) or self._build(name, name)

    def _children_of(self, type_name: str) -> dict[str, list[ElementDef]]:
        children = self._children.get(type_name)
        if children is None:
            children = {}
            for path, element in self.definitions.elements(type_name).items():
                parent, _, _ = path.rpartition(".")
                if parent:
                    children.setdefault(parent, []).append(element)
            self._children[type_name] = children
        return children

    def _build(self, type_name: str, path: str) -> TypeTable:
        is_resource = path == type_name and (
            type_name in self._resource_types or type_name in ("Resource", "DomainResource")
        )
        table = TypeTable(path, is_resource)
        # Registered before filling so recursive shapes (Extension.extension,
        # Questionnaire.item.item via contentReference) find it instead of recursing forever.
        self._tables[path] = table
        children = self._children_of(type_name)
        required: list[FieldSpec] = []
        required_groups: list[str] = []
        for element in children.get(path, ()):
            name = element.path.rpartition(".")[2]
            if element.max == "0":
                continue
            if name.endswith("[x]"):
                group = name[:-3]
                keys = []
                for type_code in element.types:
                    key = group + type_code[0].upper() + type_code[1:]
                    table.fields[key] = self._field(key, type_code, element, group, children)
                    keys.append(key)
                table.choice_groups[group] = tuple(keys)
                if element.min > 0:
                    required_groups.append(group)
                continue
            if element.content_reference:
                spec = FieldSpec(name, "BackboneElement", element, None)
                target = element.content_reference.lstrip("#")
                spec.table = self._tables.get(target) or self._build(
                    target.partition(".")[0], target
                )
                table.fields[name] = spec
            else:
                type_code = element.types[0] if element.types else "Element"
                table.fields[name] = self._field(name, type_code, element, None, children)
            if element.min > 0:
                required.append(table.fields[name])
        table.required = tuple(required)
        table.required_groups = tuple(required_groups)
        return table

    def _field(
        self,
        key: str,
        type_code: str,
        element: ElementDef,
        group: str | None,
        children: Mapping[str, list[ElementDef]],
    ) -> FieldSpec:
        spec = FieldSpec(key, type_code, element, group)
        definitions = self.definitions
        if type_code in definitions.primitive_types:
            spec.kind = PRIMITIVE
            spec.check = check_xhtml if type_code == "xhtml" else PRIMITIVE_CHECKS[type_code]
            if type_code == "code" and element.binding is not None:
                spec.binding = element.binding
            return spec
        if type_code == "Resource":
            spec.kind = RESOURCE
            return spec
        if type_code in ("BackboneElement", "Element") and element.path in children:
            spec.table = self._tables.get(element.path) or self._build(
                element.path.partition(".")[0], element.path
            )
            return spec
        spec.table = self._table_locked(type_code)
        if type_code == "Reference":
            spec.special = SPECIAL_REFERENCE
            targets = frozenset(element.target_profiles)
            # Only enforce when every target is a plain resource type (not a profile name).
            if targets and "Resource" not in targets and targets <= self._resource_types:
                spec.targets = targets
        elif type_code == "Extension":
            spec.special = SPECIAL_EXTENSION
        elif type_code in ("Coding", "CodeableConcept") and element.binding is not None:
            spec.special = SPECIAL_CODED
            spec.binding = element.binding
            spec.binding_systems = element.binding_systems
        return spec
