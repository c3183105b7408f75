"""Token and uri modifiers that need terminology or special index rows.

`:in`, `:not-in`, `:above`, `:below` (token and uri) and `:of-type` (identifier).
Placeholder during development of issue 3: implemented on its own branch.
"""

from __future__ import annotations

from typing import Any

from carebase.errors import Unsupported
from carebase.fhir.definitions.model import SearchParam

Condition = tuple[str, list[Any]]

#: the modifiers this module implements
MODIFIERS = frozenset({"in", "not-in", "above", "below", "of-type"})


def modifier_condition(
    type_: str,
    param: SearchParam,
    modifier: str,
    values: list[str],
    name: str,
    terminology: Any,
) -> Condition:
    """SQL over `resource` (`rid IN (...)` / `rid NOT IN (...)`) for one parameter with one of
    `MODIFIERS` and its OR-ed raw (still escaped) `values`. `terminology` reads ValueSets and
    CodeSystems held by the server (None where no store is at hand: then :in/:not-in and token
    :above/:below raise BadRequest saying so)."""
    raise Unsupported(f"Search parameter '{name}': modifier ':{modifier}' is not supported yet")
