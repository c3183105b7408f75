"""Full-text search (`_text`, `_content`) over a resource's narrative and text content.

Placeholder during development of issue 3: the full-text index is being built on its own branch.
"""

from __future__ import annotations

from typing import Any, Literal

from carebase.errors import Unsupported

Condition = tuple[str, list[Any]]


def text_condition(
    dialect: Literal["sqlite", "postgresql"], code: str, values: list[str], name: str
) -> Condition:
    """SQL over `resource` (a `rid IN (...)` fragment) matching any of `values` (OR).

    `code` is `_text` (narrative) or `_content` (all text of the resource); `name` is the
    parameter as the client wrote it, for error messages.
    """
    raise Unsupported(f"Search parameter '{name}' is not supported yet", location=name)
