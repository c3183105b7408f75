"""`_summary` and `_elements`: choose how a stored body is reshaped before it is sent."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from carebase.errors import BadRequest
from carebase.fhir import json_io

_SUMMARY_MODES = ("true", "text", "data", "false", "count")


def shaper_for(params: Mapping[str, str]) -> Callable[[bytes], object] | None:
    """A function reshaping stored bytes per `_elements`/`_summary`, or None to send as is.

    `_summary=count` is handled by search itself (no entries), so it needs no shaper here.
    """
    elements = params.get("_elements")
    summary = params.get("_summary")
    if summary is not None and summary not in _SUMMARY_MODES:
        raise BadRequest(
            f"_summary={summary!r} is not valid; use true, text, data, count or false",
            location="_summary",
        )
    if elements:
        names = [name.strip() for name in elements.split(",") if name.strip()]

        def select(body: bytes) -> object:
            from carebase.fhir.summary import select_elements

            return select_elements(json_io.loads(body), names)

        return select
    if summary in ("true", "text", "data"):
        mode = summary

        def summarise(body: bytes) -> object:
            from carebase.fhir.summary import summarize

            return summarize(json_io.loads(body), mode)

        return summarise
    return None
