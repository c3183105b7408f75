"""An `AuditEntry` as a FHIR R4 AuditEvent with standard codes (pure; no I/O).

REST interactions are type `rest` (audit-event-type) with the restful-interaction code as
subtype; security events use DICOM codes (110114 User Authentication with 110122 Login /
110123 Logout, 110113 Security Alert with 110127 Emergency Override Started for break-glass,
110106 Export, 110100 Application Activity with 110120/110121 for the trail's own start and
stop). Who acted is an agent (`requestor`), the server is the `source`, the resources and
Patients touched are entities, and a break-glass access carries purposeOfEvent BTG plus a
`meta.tag` asking for review.
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import Any

import orjson

from carebase.auth.audit_entry import AuditEntry
from carebase.auth.principal import Principal
from carebase.store.clock import ms_to_instant

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
#: carebase's own code systems and identifier systems (URNs: no web page behind them).
REVIEW_TAG_SYSTEM = "urn:carebase:audit-flag"
CAREBASE_INTERACTION = "urn:carebase:audit-interaction"
ROLE_SYSTEM = "urn:carebase:role"
USERNAME_SYSTEM = "urn:carebase:username"
CLIENT_SYSTEM = "urn:carebase:client-id"
SUBJECT_SYSTEM = "urn:carebase:subject"
#: The agent extension for whom an agent acts (FHIR core extensions, AuditEvent.agent).
ON_BEHALF_OF_EXTENSION = "http://hl7.org/fhir/StructureDefinition/auditevent-OnBehalfOf"

#: The restful-interaction codes of R4 (http://hl7.org/fhir/R4/codesystem-restful-interaction).
REST_INTERACTIONS = frozenset(
    {
        "read", "vread", "update", "patch", "delete", "history", "history-instance",
        "history-type", "history-system", "create", "search", "search-type", "search-system",
        "capabilities", "transaction", "batch", "operation",
    }
)  # fmt: skip

_USER_AUTH = ("110114", "User Authentication")
_LOGIN = ("110122", "Login")
_APP_ACTIVITY = ("110100", "Application Activity")
#: Security and housekeeping events: interaction -> (DICOM type, DICOM subtype or None).
SECURITY_EVENTS: dict[str, tuple[tuple[str, str], tuple[str, str] | None]] = {
    "login": (_USER_AUTH, _LOGIN),
    "logout": (_USER_AUTH, ("110123", "Logout")),
    "token": (_USER_AUTH, _LOGIN),
    "failed-auth": (_USER_AUTH, _LOGIN),
    "break-glass": (("110113", "Security Alert"), ("110127", "Emergency Override Started")),
    "export": (("110106", "Export"), None),
    "startup": (_APP_ACTIVITY, ("110120", "Application Start")),
    "unclean-shutdown": (_APP_ACTIVITY, ("110120", "Application Start")),
    "shutdown": (_APP_ACTIVITY, ("110121", "Application Stop")),
}
_OUTCOME_TEXT = {"0": None, "4": "minor failure", "8": "serious failure", "12": "major failure"}
_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


@lru_cache(maxsize=256)
def _type_and_subtype(interaction: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    if interaction in REST_INTERACTIONS:
        rest = _coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation")
        return rest, [_coding(RESTFUL_INTERACTION, interaction)]
    type_, subtype = SECURITY_EVENTS.get(interaction, (_APP_ACTIVITY, None))
    subtypes = [_coding(DICOM, *subtype)] if subtype else []
    if interaction not in SECURITY_EVENTS or subtype is None:
        # keep what happened when no standard subtype says it (e.g. export, a new event)
        subtypes.append(_coding(CAREBASE_INTERACTION, interaction))
    return _coding(DICOM, *type_), subtypes


def _who(principal: Principal) -> dict[str, Any]:
    if principal.fhir_user and _REFERENCE.fullmatch(principal.fhir_user):
        who: dict[str, Any] = {"reference": principal.fhir_user}
    elif principal.username:
        who = {"identifier": {"system": USERNAME_SYSTEM, "value": principal.username}}
    elif principal.client_id:
        who = {"identifier": {"system": CLIENT_SYSTEM, "value": principal.client_id}}
    else:
        who = {"identifier": {"system": SUBJECT_SYSTEM, "value": principal.subject}}
    display = principal.username or principal.client_id
    if display:
        who["display"] = display
    return who


def _on_behalf_of(delegator: str) -> dict[str, Any]:
    """The agent extension naming whom the agent acts for: a reference for a FHIR identity
    ("Practitioner/doc"), else the subject as an identifier."""
    if _REFERENCE.fullmatch(delegator):
        reference: dict[str, Any] = {"reference": delegator}
    else:
        reference = {"identifier": {"system": SUBJECT_SYSTEM, "value": delegator}}
    return {"url": ON_BEHALF_OF_EXTENSION, "valueReference": reference}


@lru_cache(maxsize=4096)
def _agents(principal: Principal | None, source_ip: str | None) -> list[dict[str, Any]]:
    """The agents of an event (cached: one caller makes many requests from one address)."""
    agent: dict[str, Any]
    if principal is None:
        # no credentials, or credentials that failed: who is unknown, where from is not
        agent = {"who": {"display": "unauthenticated caller"}, "requestor": True}
    else:
        human = principal.kind == "user"
        kind = "humanuser" if human else "dataprocessor"
        agent = {
            "type": {"coding": [_coding(SECURITY_ROLE_TYPE, kind)]},
            "who": _who(principal),
            "altId": principal.subject,
            "requestor": True,
        }
        if principal.role:
            agent["role"] = [{"coding": [_coding(ROLE_SYSTEM, principal.role)]}]
        if principal.username or principal.client_id:
            agent["name"] = principal.username or principal.client_id
        if principal.on_behalf_of:
            agent["extension"] = [_on_behalf_of(principal.on_behalf_of)]
    if source_ip:
        agent["network"] = {"address": source_ip, "type": "2"}  # 2 = IP address
    agents = [agent]
    if principal is not None and principal.kind == "user" and principal.client_id:
        # the app the user acted through (a SMART app), not itself the requestor
        app = {"identifier": {"system": CLIENT_SYSTEM, "value": principal.client_id}}
        agents.append(
            {
                "type": {"coding": [_coding(SECURITY_ROLE_TYPE, "dataprocessor")]},
                "who": app,
                "requestor": False,
            }
        )
    return agents


def _entities(entry: AuditEntry) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    seen: set[str] = set()
    for patient in entry.patients:
        reference = f"Patient/{patient}"
        seen.add(reference)
        entities.append(_entity(reference, patient=True))
    for reference in entry.entities:
        if reference in seen:
            continue
        seen.add(reference)
        entities.append(_entity(reference, patient=reference.startswith("Patient/")))
    if entry.query is not None:
        query = base64.b64encode(entry.query.encode("utf-8")).decode("ascii")
        entities.append(
            {
                "type": _SYSTEM_OBJECT,
                "role": _QUERY_ROLE,
                "query": query,
            }
        )
    return entities


_PERSON = _coding(ENTITY_TYPE, "1", "Person")
_PATIENT_ROLE = _coding(OBJECT_ROLE, "1", "Patient")
_SYSTEM_OBJECT = _coding(ENTITY_TYPE, "2", "System Object")
_RESOURCE_ROLE = _coding(OBJECT_ROLE, "4", "Domain Resource")
_QUERY_ROLE = _coding(OBJECT_ROLE, "24", "Query")
_OTHER = _coding(ENTITY_TYPE, "4", "Other")


def _entity(reference: str, *, patient: bool) -> dict[str, Any]:
    what = {"reference": reference} if _REFERENCE.fullmatch(reference) else {"display": reference}
    if patient:
        return {"what": what, "type": _PERSON, "role": _PATIENT_ROLE}
    return {"what": what, "type": _SYSTEM_OBJECT, "role": _RESOURCE_ROLE}


def outcome_code(interaction: str, outcome: str) -> str:
    """The AuditEvent outcome of an entry: its own, except that a failed authentication is
    never recorded as a success."""
    if interaction == "failed-auth" and outcome == "0":
        return "4"
    return outcome


def recorded_instant(entry: AuditEntry) -> str:
    """When `entry` was recorded, as a FHIR instant with milliseconds (UTC)."""
    return ms_to_instant(entry.recorded_ms)


def to_audit_event(
    entry: AuditEntry, id_: str, *, observer: str = "carebase", site: str | None = None
) -> dict[str, Any]:
    """The AuditEvent resource for `entry`, with id `id_`; `observer` names this server and
    `site` is where it serves (its FHIR base URL)."""
    resource: dict[str, Any] = orjson.loads(audit_event_bytes(entry, id_, observer, site))
    return resource


@lru_cache(maxsize=16)
def _source(observer: str, site: str | None) -> dict[str, Any]:
    source: dict[str, Any] = {
        "observer": {"display": observer},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }
    if site:
        source["site"] = site
    return source


def audit_event_bytes(entry: AuditEntry, id_: str, observer: str, site: str | None) -> bytes:
    """`to_audit_event` serialised (compact JSON): the trail's hot path.

    Parts that repeat across events (codes, the caller's agent, the source) are built once
    and shared, which is safe because the dict is serialised here and never handed out.
    """
    type_, subtypes = _type_and_subtype(entry.interaction)
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": id_}
    break_glass = entry.break_glass or (entry.principal.break_glass if entry.principal else None)
    if break_glass:
        review = _coding(REVIEW_TAG_SYSTEM, "review", "Break-glass access: review required")
        event["meta"] = {"tag": [review]}
    event["type"] = type_
    if subtypes:
        event["subtype"] = subtypes
    event["action"] = entry.action
    event["recorded"] = recorded_instant(entry)
    outcome = outcome_code(entry.interaction, entry.outcome)
    event["outcome"] = outcome
    description = entry.description or _OUTCOME_TEXT[outcome]
    if description:
        event["outcomeDesc"] = description
    if break_glass:
        btg = _coding(ACT_REASON, "BTG", "break the glass")
        event["purposeOfEvent"] = [{"coding": [btg], "text": break_glass}]
    event["agent"] = _agents(entry.principal, entry.source_ip)
    event["source"] = _source(observer, site)
    entities = _entities(entry)
    if entities:
        event["entity"] = entities
    if entry.user_agent:
        event.setdefault("entity", []).append(
            {
                "type": _OTHER,
                "name": "user-agent",
                "description": entry.user_agent,
            }
        )
    return orjson.dumps(event)
