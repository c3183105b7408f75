"""fhirpathpy compilations of R4 search expressions, shared by the tests that use them as an
oracle (the compiled indexer and the brute-force search reference)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from carebase.fhir.search_expression import rewrite_resolve

_AS = re.compile(r"\(([A-Za-z.]+) as ([A-Za-z]+)\)")


@cache
def compiled(expr: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(strict, lenient) fhirpathpy functions for a search expression.

    `resolve() is X` is rewritten as the indexer decides it; the lenient form uses `ofType`
    where R4 writes `as`, because fhirpathpy raises on `as` over several values.
    """
    text = rewrite_resolve(expr)
    lenient = _AS.sub(r"\1.ofType(\2)", text).replace(".as(", ".ofType(")
    return fhirpathpy.compile(text, models["r4"]), fhirpathpy.compile(lenient, models["r4"])
