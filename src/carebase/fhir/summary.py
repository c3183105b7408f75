"""`_summary` and `_elements`: cutting a resource down to a subset of its elements.

What counts as "summary" comes from the R4 definitions (`ElementDefinition.isSummary`), applied
recursively: a kept element of a data type or backbone element keeps only its own summary
children. Whenever something is cut, the result carries the SUBSETTED tag in `meta.tag`, so a
client never mistakes it for the whole resource. The input is never mutated; results never
share objects with it. `_summary=count` belongs to search and is refused here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from carebase.errors import BadRequest
from carebase.fhir.element_nav import (
    Context,
    Resolved,
    child_context,
    choice_keys,
    key_table,
    root_context,
)
from carebase.fhir.patch import json_copy

__all__ = ["SUBSETTED", "SUMMARY_MODES", "select_elements", "summarize"]

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
SUMMARY_MODES = ("true", "text", "data", "false")
_ALWAYS = ("resourceType", "id", "meta")


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """The resource as `_summary=mode` asks (true, text, data, false); a new dict."""
    if mode == "count":
        raise BadRequest(
            "_summary=count only applies to searches, not to reading one resource",
            location="_summary",
        )
    if mode not in SUMMARY_MODES:
        raise BadRequest(
            f"_summary must be one of {', '.join(SUMMARY_MODES)} (or count in a search), "
            f"not {mode!r}",
            location="_summary",
        )
    doc: dict[str, Any] = json_copy(resource)
    if mode == "false":
        return doc
    if mode == "data":
        if "text" not in doc:
            return doc
        del doc["text"]
        return _tagged(doc)
    ctx = _ctx_of(doc)
    if ctx is None:
        return doc  # unknown resource type: nothing to judge by, so nothing is cut
    if mode == "text":
        keep = _mandatory_keys(ctx) | {"text", *_ALWAYS}
        return _keep_top_level(doc, keep)
    result, cut = _summary_of(doc, ctx)
    return _tagged(result) if cut else result


def select_elements(resource: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    """The resource as `_elements` asks: the named top-level elements plus the mandatory ones.

    Names may be bare (`birthDate`) or prefixed by the type (`Patient.birthDate`); a choice name
    (`value`) keeps whichever typed form is present. Names the type does not have are ignored,
    as the spec allows; names of nested elements keep their top-level element.
    """
    doc: dict[str, Any] = json_copy(resource)
    ctx = _ctx_of(doc)
    if ctx is None:
        return doc
    keep = set(_ALWAYS) | _mandatory_keys(ctx)
    prefix = ctx.type_name + "."
    for raw in elements:
        name = raw.strip()
        name = name.removeprefix(prefix).split(".", 1)[0]
        if not name:
            continue
        keep.add(name)
        keep.update(choice_keys(ctx, name))
    return _keep_top_level(doc, keep)


def _ctx_of(doc: dict[str, Any]) -> Context | None:
    resource_type = doc.get("resourceType")
    if not isinstance(resource_type, str) or not _summary_table(root_context(resource_type)):
        return None
    return root_context(resource_type)


def _tagged(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the SUBSETTED tag to `doc` (which is already a private copy) unless present."""
    meta = doc.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    tags = meta.get("tag")
    tags = tags if isinstance(tags, list) else []
    if not any(
        isinstance(t, dict)
        and t.get("system") == SUBSETTED["system"]
        and t.get("code") == "SUBSETTED"
        for t in tags
    ):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    if "meta" in doc:
        doc["meta"] = meta
        return doc
    # Put a new meta where readers expect it: after resourceType and id.
    head: dict[str, Any] = {k: doc[k] for k in ("resourceType", "id") if k in doc}
    return {**head, "meta": meta, **doc}


def _keep_top_level(doc: dict[str, Any], keep: set[str] | frozenset[str]) -> dict[str, Any]:
    """`doc` restricted to the keys in `keep` (and their `_name` extension siblings)."""
    result = {k: v for k, v in doc.items() if k in keep or (k[:1] == "_" and k[1:] in keep)}
    return _tagged(result) if len(result) < len(doc) else result


@lru_cache(maxsize=1024)
def _mandatory_keys(ctx: Context) -> frozenset[str]:
    """JSON keys of elements with min >= 1 directly under `ctx` (choices in every typed form)."""
    table = key_table(ctx.type_name, ctx.path)
    return frozenset(key for key, found in table.items() if found.element.min >= 1)


@lru_cache(maxsize=4096)
def _summary_table(ctx: Context) -> dict[str, Resolved]:
    """JSON key -> element, for the summary elements directly under `ctx`."""
    return {k: r for k, r in key_table(ctx.type_name, ctx.path).items() if r.element.summary}


def _summary_of(obj: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], bool]:
    """`obj` with only its summary elements, recursively; and whether anything was cut."""
    table = _summary_table(ctx)
    result: dict[str, Any] = {}
    cut = False
    for key, value in obj.items():
        found = table.get(key)
        if found is None:
            if key == "resourceType":
                result[key] = value  # the resource's own or a nested resource's type
                continue
            if key[:1] == "_" and key[1:] in table:
                # A primitive's id/extension: extensions are not summary elements.
                cut = True
                continue
            cut = True
            continue
        kept, lost = _summary_value(value, ctx, found)
        cut = cut or lost
        if kept is not None:
            result[key] = kept
    return result, cut


def _summary_value(value: Any, ctx: Context, found: Resolved) -> tuple[Any, bool]:
    if isinstance(value, list):
        items: list[Any] = []
        cut = False
        for item in value:
            kept, lost = _summary_value(item, ctx, found)
            cut = cut or lost
            if kept is not None:
                items.append(kept)
        return (items or None), cut
    if not isinstance(value, dict):
        return value, False
    sub = child_context(ctx, found, value)
    if sub is None or not _summary_table(sub):
        return value, False  # a type we cannot look into is kept whole
    kept, cut = _summary_of(value, sub)
    # An object left empty is not valid FHIR: drop it (which is itself a cut).
    return (kept or None), cut or not kept
