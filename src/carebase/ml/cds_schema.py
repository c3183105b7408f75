"""CDS Hooks 1.0/2.0 message checks: service requests, responses (cards) and discovery
documents, each problem an `Issue` with its location (`CDSHooksRequest.context.patientId`).

Pure functions over parsed JSON. Resources inside a message (prefetch values, draft orders,
suggested resources) are checked with carebase's R4 validator. Extensions (`extension`
objects) are open by the specification - a party MUST ignore those it does not understand -
so an extension is never an error here; one that is not an object is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from carebase.errors import Issue
from carebase.fhir.bundle import ID_RE
from carebase.fhir.validation import validate_resource

REQUEST, RESPONSE, SERVICES = "CDSHooksRequest", "CDSHooksResponse", "CDSHooksServices"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TYPED_ID = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
#: Context fields each standard hook requires; other hooks need only a patient.
_HOOK_CONTEXT: dict[str, tuple[str, ...]] = {
    "patient-view": ("userId", "patientId"),
    "order-select": ("userId", "patientId", "selections", "draftOrders"),
    "order-sign": ("userId", "patientId", "draftOrders"),
    "encounter-start": ("userId", "patientId", "encounterId"),
    "encounter-discharge": ("userId", "patientId", "encounterId"),
}
_INDICATORS = ("info", "warning", "critical")
_SELECTION = ("at-most-one", "any")
_LINK_TYPES = ("absolute", "smart")
_ACTION_TYPES = ("create", "update", "delete")


class _Checker:
    def __init__(self, root: str) -> None:
        self.root = root
        self.issues: list[Issue] = []

    def error(self, code: str, where: str, text: str) -> None:
        self.issues.append(Issue("error", code, text, [f"{self.root}{where}"]))

    def string(self, obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> bool:
        value = obj.get(key)
        if value is None:
            if required:
                self.error("required", f"{where}.{key}", f"{key} is required")
            return False
        if not isinstance(value, str) or not value.strip():
            self.error("invalid", f"{where}.{key}", f"{key} must be a non-empty string")
            return False
        return True

    def warning(self, code: str, where: str, text: str) -> None:
        self.issues.append(Issue("warning", code, text, [f"{self.root}{where}"]))

    def extension(self, obj: Mapping[str, Any], where: str) -> None:
        if "extension" not in obj:
            return
        if not isinstance(obj["extension"], dict):
            self.error("structure", f"{where}.extension", "extension must be a JSON object")
            return
        for name in obj["extension"]:
            self.warning(
                "informational",
                f"{where}.extension",
                f"extension {name!r} is not one carebase understands; it is ignored",
            )

    def resource(self, value: Any, where: str, *, needs_id: bool = False) -> None:
        if not isinstance(value, dict) or "resourceType" not in value:
            self.error(
                "invalid", where, "expected a FHIR resource (a JSON object with resourceType)"
            )
            return
        if needs_id and not value.get("id"):
            self.error("required", f"{where}.id", "this resource needs an id")
        kind = value["resourceType"]
        label = f"/*{kind}/{value.get('id') or 'null'}*/"
        for issue in validate_resource(value):
            if issue.severity not in ("error", "fatal"):
                continue
            inner = issue.expression[0] if issue.expression else ""
            inner = inner.removeprefix(f"{kind}.") if inner != kind else ""
            place = f"{self.root}{where}{label}" + (f".{inner}" if inner else "")
            self.issues.append(Issue(issue.severity, issue.code, issue.diagnostics, [place]))


def request_issues(body: Any) -> list[Issue]:
    """Every problem of a CDS Hooks service request (empty when it is well formed)."""
    c = _Checker(REQUEST)
    if not isinstance(body, dict):
        c.error("structure", "", "a CDS Hooks request must be a JSON object")
        return c.issues
    c.string(body, "hook", "", required=True)
    if c.string(body, "hookInstance", "", required=True) and not _UUID.fullmatch(
        body["hookInstance"]
    ):
        c.error("invalid", ".hookInstance", "hookInstance must be a UUID")
    if c.string(body, "fhirServer", "", required=False) and not str(body["fhirServer"]).startswith(
        ("http://", "https://")
    ):
        c.error("invalid", ".fhirServer", "fhirServer must be an http(s) URL")
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict):
            c.error("structure", ".fhirAuthorization", "fhirAuthorization must be an object")
        else:
            for key in ("access_token", "token_type", "scope", "subject"):
                c.string(auth, key, ".fhirAuthorization", required=True)
            if not isinstance(auth.get("expires_in"), int):
                c.error("required", ".fhirAuthorization.expires_in", "expires_in is a number")
            if "fhirServer" not in body:
                c.error("required", ".fhirServer", "fhirAuthorization needs a fhirServer")
    context = body.get("context")
    if not isinstance(context, dict):
        c.error("required", ".context", "context (an object) is required")
    else:
        _context(c, str(body.get("hook") or ""), context)
    prefetch = body.get("prefetch")
    if prefetch is not None:
        if not isinstance(prefetch, dict):
            c.error("structure", ".prefetch", "prefetch must be an object of key: resource")
        else:
            for i, value in enumerate(prefetch.values()):
                if value is not None:  # null: the client found nothing for the template
                    c.resource(value, f".prefetch[{i}].value")
    c.extension(body, "")
    return c.issues


def _context(c: _Checker, hook: str, context: dict[str, Any]) -> None:
    for key in _HOOK_CONTEXT.get(hook, ("patientId",)):
        if key not in context:
            c.error("required", f".context.{key}", f"the {hook} hook's context needs {key}")
    for key in ("patientId", "encounterId"):
        value = context.get(key)
        if value is not None and (not isinstance(value, str) or not ID_RE.fullmatch(value)):
            c.error(
                "invalid",
                f".context.{key}",
                f"{key} {value!r} is not a FHIR id (send the bare id, without 'Type/')",
            )
    user = context.get("userId")
    if user is not None and (not isinstance(user, str) or not _TYPED_ID.fullmatch(user)):
        c.error("invalid", ".context.userId", "userId must be Type/id (e.g. Practitioner/123)")
    selections = context.get("selections")
    if selections is not None:
        if not isinstance(selections, list) or not selections:
            c.error("invalid", ".context.selections", "selections must be a non-empty list")
        else:
            for i, item in enumerate(selections):
                if not isinstance(item, str) or not _TYPED_ID.fullmatch(item):
                    c.error("invalid", f".context.selections[{i}]", "must be Type/id")
    orders = context.get("draftOrders")
    if orders is not None:
        c.resource(orders, ".context.draftOrders")
        if isinstance(orders, dict) and orders.get("resourceType") == "Bundle":
            for i, entry in enumerate(orders.get("entry") or []):
                if isinstance(entry, dict) and not entry.get("fullUrl"):
                    c.error(
                        "required",
                        f".context.draftOrders.entry[{i}]",
                        "Bundle entry missing fullUrl",
                    )


def response_issues(body: Any) -> list[Issue]:
    """Every problem of a CDS Hooks service response (`cards`, `systemActions`)."""
    c = _Checker(RESPONSE)
    if not isinstance(body, dict):
        c.error("structure", "", "a CDS Hooks response must be a JSON object")
        return c.issues
    if "cards" not in body:
        c.error("required", ".cards", "cards is required (an empty list when there is nothing)")
    cards = body.get("cards", [])
    if not isinstance(cards, list):
        c.error("structure", ".cards", "cards must be a list")
        cards = []
    for i, card in enumerate(cards):
        _card(c, card, f".cards[{i}]")
    for i, action in enumerate(body.get("systemActions") or []):
        _action(c, action, f".systemActions[{i}]")
    c.extension(body, "")
    return c.issues


def _card(c: _Checker, card: Any, where: str) -> None:
    if not isinstance(card, dict):
        c.error("structure", where, "a card must be an object")
        return
    if c.string(card, "summary", where, required=True) and len(card["summary"]) >= 140:
        c.warning("invalid", f"{where}.summary", "summary SHOULD be under 140 characters")
    if card.get("indicator") not in _INDICATORS:
        c.error("invalid", f"{where}.indicator", f"indicator must be one of {_INDICATORS}")
    if "uuid" in card and not (isinstance(card["uuid"], str) and _UUID.fullmatch(card["uuid"])):
        c.error("invalid", f"{where}.uuid", "uuid must be a UUID")
    source = card.get("source")
    if not isinstance(source, dict):
        c.error("required", f"{where}.source", "source (an object with a label) is required")
    else:
        if not source:
            c.error("invalid", f"{where}.source", "source must have some content")
        c.string(source, "label", f"{where}.source", required=True)
    suggestions = card.get("suggestions") or []
    if suggestions and card.get("selectionBehavior") not in _SELECTION:
        c.error(
            "invariant",
            where,
            "cds-resp-6: if suggestions are present, selectionBehavior MUST be provided",
        )
    for j, suggestion in enumerate(suggestions):
        spot = f"{where}.suggestions[{j}]"
        if not isinstance(suggestion, dict):
            c.error("structure", spot, "a suggestion must be an object")
            continue
        c.string(suggestion, "label", spot, required=True)
        for k, action in enumerate(suggestion.get("actions") or []):
            _action(c, action, f"{spot}.actions[{k}]")
    for j, link in enumerate(card.get("links") or []):
        spot = f"{where}.links[{j}]"
        if not isinstance(link, dict):
            c.error("structure", spot, "a link must be an object")
            continue
        c.string(link, "label", spot, required=True)
        c.string(link, "url", spot, required=True)
        if "type" not in link:  # required by the 1.0 text, tolerated by the reference validator
            c.warning("required", f"{spot}.type", f"type should be one of {_LINK_TYPES}")
        elif link["type"] not in _LINK_TYPES:
            c.error("invalid", f"{spot}.type", f"type must be one of {_LINK_TYPES}")


def _action(c: _Checker, action: Any, where: str) -> None:
    if not isinstance(action, dict):
        c.error("structure", where, "an action must be an object")
        return
    if action.get("type") not in _ACTION_TYPES:
        c.error("invalid", f"{where}.type", f"type must be one of {_ACTION_TYPES}")
    if action.get("type") in ("create", "update"):
        if "resource" not in action:
            c.error("required", f"{where}.resource", "create and update actions need a resource")
        else:
            # the client stores it as sent: it needs an id to be referenced in the response
            c.resource(action["resource"], f"{where}.resource", needs_id=True)
    if action.get("type") == "delete" and not isinstance(action.get("resourceId"), list | str):
        c.error("required", f"{where}.resourceId", "delete actions need resourceId")


def services_issues(body: Any) -> list[Issue]:
    """Every problem of a CDS Hooks discovery document (`services`)."""
    c = _Checker(SERVICES)
    if not isinstance(body, dict) or not isinstance(body.get("services"), list):
        c.error("required", ".services", "a discovery document is an object with services")
        return c.issues
    for i, service in enumerate(body["services"]):
        where = f".services[{i}]"
        if not isinstance(service, dict):
            c.error("structure", where, "a service must be an object")
            continue
        for key in ("hook", "description", "id"):
            c.string(service, key, where, required=True)
        c.string(service, "title", where, required=False)
        prefetch = service.get("prefetch")
        if prefetch is not None and not (
            isinstance(prefetch, dict) and all(isinstance(v, str) for v in prefetch.values())
        ):
            c.error("invalid", f"{where}.prefetch", "prefetch maps keys to query templates")
        c.extension(service, where)
    return c.issues


def errors_of(issues: list[Issue]) -> list[Issue]:
    """The issues that make a message invalid (errors and fatal ones)."""
    return [issue for issue in issues if issue.severity in ("error", "fatal")]
