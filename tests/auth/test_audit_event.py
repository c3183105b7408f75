"""AuditEntry -> R4 AuditEvent: standard codes, who/what/where, break-glass, and validity."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from carebase.auth.audit_entry import AuditEntry
from carebase.auth.audit_event import (
    ACT_REASON,
    AUDIT_EVENT_TYPE,
    DICOM,
    RESTFUL_INTERACTION,
    REVIEW_TAG_SYSTEM,
    to_audit_event,
)
from carebase.auth.principal import Principal
from carebase.fhir.validation import validate_resource
from carebase.store.clock import datetime_to_ms

CLINICIAN = Principal(
    subject="user-7",
    username="dr.grey",
    fhir_user="Practitioner/7",
    role="clinician",
    client_id="smart-app",
    scopes=frozenset({"user/*.rs"}),
)
SERVICE = Principal(subject="svc-1", kind="service", role="service", client_id="lab-feed")
WHEN = datetime(2026, 11, 28, 10, 20, 30, 123000, tzinfo=UTC)


def event(entry: AuditEntry) -> dict[str, Any]:
    """The AuditEvent of `entry`, asserting carebase's own validator accepts it."""
    resource = to_audit_event(entry, "ev-1", site="http://testserver/fhir")
    assert validate_resource(resource) == []
    return resource


def test_search_is_rest_search_type_with_patient_and_query_entities() -> None:
    entry = AuditEntry(
        "search-type",
        "R",
        principal=CLINICIAN,
        entities=("Observation/o1", "Patient/p1"),
        patients=("p1",),
        query="subject=Patient/p1&code=4548-4",
        source_ip="10.1.2.3",
        recorded_ms=datetime_to_ms(WHEN),
    )
    ev = event(entry)
    assert ev["type"] == {
        "system": AUDIT_EVENT_TYPE,
        "code": "rest",
        "display": "Restful Operation",
    }
    assert ev["subtype"] == [{"system": RESTFUL_INTERACTION, "code": "search-type"}]
    assert ev["action"] == "R"
    assert ev["outcome"] == "0"
    assert ev["recorded"] == "2026-11-28T10:20:30.123Z"
    requestor = ev["agent"][0]
    assert requestor["who"]["reference"] == "Practitioner/7"
    assert requestor["requestor"] is True
    assert requestor["network"] == {"address": "10.1.2.3", "type": "2"}
    assert requestor["role"][0]["coding"][0]["code"] == "clinician"
    # the SMART app the clinician used is a second, non-requesting agent
    assert ev["agent"][1]["who"]["identifier"]["value"] == "smart-app"
    assert ev["agent"][1]["requestor"] is False
    assert ev["source"]["observer"]["display"] == "carebase"
    assert ev["source"]["site"] == "http://testserver/fhir"
    patients = [e for e in ev["entity"] if e.get("role", {}).get("code") == "1"]
    assert [p["what"]["reference"] for p in patients] == ["Patient/p1"]  # listed once
    others = [e["what"]["reference"] for e in ev["entity"] if e.get("role", {}).get("code") == "4"]
    assert others == ["Observation/o1"]
    (query,) = [e for e in ev["entity"] if "query" in e]
    assert base64.b64decode(query["query"]).decode() == "subject=Patient/p1&code=4548-4"
    assert "meta" not in ev and "purposeOfEvent" not in ev


@pytest.mark.parametrize(
    ("interaction", "code"), [("read", "read"), ("vread", "vread"), ("create", "create")]
)
def test_rest_interactions_keep_their_code(interaction: str, code: str) -> None:
    ev = event(AuditEntry(interaction, "R", principal=SERVICE, entities=("Patient/p2",)))
    assert ev["subtype"] == [{"system": RESTFUL_INTERACTION, "code": code}]
    # a service is identified by its client id
    assert ev["agent"][0]["who"]["identifier"]["value"] == "lab-feed"
    assert ev["agent"][0]["type"]["coding"][0]["code"] == "dataprocessor"


def test_login_and_logout_are_dicom_user_authentication() -> None:
    login = event(AuditEntry("login", "E", principal=CLINICIAN))
    logout = event(AuditEntry("logout", "E", principal=CLINICIAN))
    assert login["type"]["system"] == DICOM and login["type"]["code"] == "110114"
    assert login["subtype"][0] == {"system": DICOM, "code": "110122", "display": "Login"}
    assert logout["subtype"][0] == {"system": DICOM, "code": "110123", "display": "Logout"}


def test_failed_auth_is_a_minor_failure_from_an_unknown_caller() -> None:
    ev = event(
        AuditEntry("failed-auth", "E", source_ip="192.0.2.9", description="bad password: bob")
    )
    assert ev["type"]["code"] == "110114"
    assert ev["outcome"] == "4"  # never recorded as a success
    assert ev["outcomeDesc"] == "bad password: bob"
    assert ev["agent"][0]["who"] == {"display": "unauthenticated caller"}
    assert ev["agent"][0]["network"]["address"] == "192.0.2.9"


def test_break_glass_carries_btg_purpose_and_a_review_tag() -> None:
    glass = CLINICIAN.with_break_glass("unconscious patient in the ED")
    ev = event(AuditEntry("read", "R", principal=glass, patients=("p9",)))
    assert ev["purposeOfEvent"] == [
        {
            "coding": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}],
            "text": "unconscious patient in the ED",
        }
    ]
    assert ev["meta"]["tag"][0]["system"] == REVIEW_TAG_SYSTEM
    assert ev["meta"]["tag"][0]["code"] == "review"
    alert = event(AuditEntry("break-glass", "E", principal=CLINICIAN, break_glass="fire drill"))
    assert alert["type"]["code"] == "110113" and alert["subtype"][0]["code"] == "110127"
    assert alert["purposeOfEvent"][0]["text"] == "fire drill"


def test_events_without_a_standard_subtype_say_what_happened() -> None:
    ev = event(AuditEntry("export", "R", principal=SERVICE))
    assert ev["type"]["code"] == "110106"
    assert ev["subtype"] == [{"system": "urn:carebase:audit-interaction", "code": "export"}]
    odd = event(AuditEntry("key-rotation", "E", principal=SERVICE))
    assert odd["type"]["code"] == "110100"
    assert odd["subtype"][-1]["code"] == "key-rotation"


def test_a_malformed_entity_is_kept_as_display_not_an_invalid_reference() -> None:
    ev = event(AuditEntry("read", "R", principal=SERVICE, entities=("not a reference",)))
    assert ev["entity"][0]["what"] == {"display": "not a reference"}


def test_the_validator_would_catch_a_broken_event() -> None:
    # the validation the tests above rely on does reject what R4 forbids
    ev = to_audit_event(AuditEntry("read", "R", principal=SERVICE), "ev-2")
    ev["outcome"] = "3"
    del ev["agent"][0]["requestor"]
    problems = {i.expression[0] for i in validate_resource(ev) if i.expression}
    assert {"AuditEvent.outcome", "AuditEvent.agent[0].requestor"} <= problems
