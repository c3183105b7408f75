"""Runtime building blocks of compiled search expressions: list -> list steps and helpers.

Kept apart from the compiler so the hot code is small and easy to profile. Every step takes
the current collection (a list of JSON nodes) and returns the next one; `chain` fuses a
sequence of steps into one callable with as little call overhead as Python allows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

Step = Callable[[list[Any]], list[Any]]


def child_step(key: str, primitive: bool) -> Step:
    """Navigate to JSON member `key` of every node, flattening arrays.

    Primitive arrays may hold `null` placeholders (when only `_key` carries an extension at
    that position); FHIRPath has no value there, so they are dropped.
    """
    if primitive:

        def prim(nodes: list[Any]) -> list[Any]:
            out: list[Any] = []
            for node in nodes:
                value = node.get(key)
                if value is not None:
                    if value.__class__ is list:
                        out.extend(v for v in value if v is not None)
                    else:
                        out.append(value)
            return out

        return prim

    def complex_(nodes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            value = node.get(key)
            if value is not None:
                if value.__class__ is list:
                    out.extend(value)
                else:
                    out.append(value)
        return out

    return complex_


def filter_step(pred: Callable[[Any], bool]) -> Step:
    """Keep the nodes `pred` accepts (FHIRPath `where`)."""

    def where(nodes: list[Any]) -> list[Any]:
        return [n for n in nodes if pred(n)]

    return where


def slice_step(index: int) -> Step:
    """The item at `index`, or nothing (FHIRPath `[n]` and `first()`)."""

    def item(nodes: list[Any]) -> list[Any]:
        return nodes[index : index + 1]

    return item


def chain(steps: Sequence[Step]) -> Step:
    """One callable running `steps` in order; short chains are unrolled (the common case)."""
    n = len(steps)
    if n == 0:
        return lambda nodes: nodes
    if n == 1:
        return steps[0]
    if n == 2:
        a, b = steps

        def two(nodes: list[Any]) -> list[Any]:
            got = a(nodes)
            return b(got) if got else got

        return two
    if n == 3:
        a, b, c = steps

        def three(nodes: list[Any]) -> list[Any]:
            got = a(nodes)
            if got:
                got = b(got)
                if got:
                    return c(got)
            return got

        return three
    all_steps = tuple(steps)

    def many(nodes: list[Any]) -> list[Any]:
        for step in all_steps:
            if not nodes:
                break
            nodes = step(nodes)
        return nodes

    return many


def fp_equal(value: Any, literal: Any) -> bool:
    """FHIRPath `=` between one value and a literal: no Python bool/int or str/bool mixing."""
    if isinstance(value, bool) or isinstance(literal, bool):
        return type(value) is type(literal) and value == literal
    if isinstance(literal, str) != isinstance(value, str):
        return False
    return bool(value == literal)


_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}")


@functools.lru_cache(maxsize=65536)
def reference_type(reference: str) -> str | None:
    """The resource type a reference text names (`Patient/1`, `http://x/Patient/1/_history/2`).

    None for anything else (`urn:uuid:...`, `#contained`, malformed ids). Cached: the same
    subject/encounter references recur on every resource of a patient.
    """
    parts = reference.split("/")
    valid = _ID.fullmatch
    if len(parts) >= 4 and parts[-2] == "_history":
        if valid(parts[-3]) and valid(parts[-1]) and parts[-4]:
            return parts[-4]
        return None
    if len(parts) >= 2 and valid(parts[-1]):
        return parts[-2] or None
    return None


def reference_is(node: Any, type_name: str) -> bool:
    """`resolve() is type_name` without resolving: read the reference text, else `type`."""
    if node.__class__ is not dict:
        return False
    ref = node.get("reference")
    if ref is None:
        return bool(node.get("type") == type_name)
    return reference_type(ref) == type_name
