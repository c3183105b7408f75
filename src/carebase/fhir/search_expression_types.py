"""What a FHIRPath name means on a given FHIR type: JSON keys, child types, primitiveness.

`TypeModel.child("Observation", "value")` answers with one entry per choice type
(`valueQuantity` as Quantity, `valueString` as string, ...). Types are keyed by their name
(`HumanName`) or, for backbone elements, by their path (`Observation.component`), so nested
backbones resolve against the owning type's snapshot; `contentReference`s
(`Questionnaire.item.item`) point back at the referenced path.
"""

from __future__ import annotations

from typing import ClassVar

from carebase.fhir.definitions.loader import Definitions
from carebase.fhir.search_expression_parser import UnsupportedExpression

#: (JSON key, child type key, is primitive, single bound code system or None)
ChildEntry = tuple[str, str, bool, str | None]

_BACKBONE_TYPES = (("BackboneElement",), ("Element",), ())


class TypeModel:
    """Child lookups over the R4 element definitions, built lazily and cached per type."""

    _shared: ClassVar[dict[int, TypeModel]] = {}

    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self._children: dict[str, dict[str, list[ChildEntry]]] = {}

    @classmethod
    def shared(cls, defs: Definitions) -> TypeModel:
        """One model per Definitions object (the process normally has exactly one)."""
        model = cls._shared.get(id(defs))
        if model is None or model.defs is not defs:
            model = cls._shared[id(defs)] = cls(defs)
        return model

    def child(self, type_key: str, name: str) -> list[ChildEntry]:
        """The entries `name` selects on `type_key`; unknown names are unsupported.

        An unknown name is legal FHIRPath (it yields nothing) but in an official expression
        it means our type tracking went wrong, so we let fhirpathpy handle the expression.
        """
        children = self._children.get(type_key)
        if children is None:
            children = self._children[type_key] = self._build(type_key)
        entries = children.get(name)
        if entries is None:
            raise UnsupportedExpression(f"{type_key} has no element {name!r}")
        return entries

    def _build(self, type_key: str) -> dict[str, list[ChildEntry]]:
        defs = self.defs
        root, _, rest = type_key.partition(".")
        if not rest and root in defs.primitive_types:
            return {}  # primitives have no navigable children in JSON
        root = defs.resolve_type(root)
        prefix = f"{root}.{rest}." if rest else f"{root}."
        out: dict[str, list[ChildEntry]] = {}
        for path, element in defs.elements(root).items():
            if not path.startswith(prefix):
                continue
            name = path[len(prefix) :]
            if "." in name:
                continue
            system = None
            if len(element.binding_systems) == 1:
                system = next(iter(element.binding_systems))
            if name.endswith("[x]"):
                name = name[:-3]
                out[name] = [
                    (
                        name + t[0].upper() + t[1:],
                        t,
                        t in defs.primitive_types,
                        system if t == "code" else None,
                    )
                    for t in element.types
                ]
                continue
            if element.content_reference:
                ctype = element.content_reference.lstrip("#")
            elif element.types in _BACKBONE_TYPES:
                ctype = path
            else:
                ctype = element.types[0]
            primitive = ctype in defs.primitive_types
            out[name] = [(name, ctype, primitive, system if ctype == "code" else None)]
        return out
