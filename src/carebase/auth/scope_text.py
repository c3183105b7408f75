"""SMART scopes in plain language, for the consent screen ("Read and search your lab
results" rather than `patient/Observation.rs?category=...|laboratory`)."""

from __future__ import annotations

import re

from carebase.auth.scopes import ScopeError, parse_scope

_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
#: (before, after) the kind of records, per scope context
_WHOSE = {
    "patient": ("the selected patient's ", ""),
    "user": ("", " that you can access"),
    "system": ("", " of all patients"),
}
_OTHER = {
    "openid": "Confirm who you are to the application",
    "fhirUser": "Know your user identity (your FHIR Patient or Practitioner record)",
    "profile": "See your user name",
    "launch": "Open in the context of the record you launched it from",
    "launch/patient": "Work with one patient's record (you choose which)",
    "launch/encounter": "Work within one encounter",
    "offline_access": "Keep access when you are not using it, until you revoke it",
    "online_access": "Keep access while you are signed in",
}


def _type_words(type_: str) -> str:
    if type_ == "*":
        return "records of every kind"
    # "MedicationRequest" -> "medication request records"
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type_).lower() + " records"


def describe_scope(scope: str) -> str:
    """One line saying what `scope` lets an application do."""
    if scope in _OTHER:
        return _OTHER[scope]
    try:
        parsed = parse_scope(scope)
    except ScopeError:
        parsed = None
    if parsed is None:
        return f"Use the permission {scope!r}"
    verbs = [_VERBS[c] for c in "cruds" if c in parsed.permissions]
    action = ", ".join(verbs[:-1]) + (" and " if len(verbs) > 1 else "") + verbs[-1]
    before, after = _WHOSE[parsed.context]
    text = f"{action.capitalize()} {before}{_type_words(parsed.type)}{after}"
    if parsed.query:
        criteria = ", ".join(f"{k} = {v.split('|')[-1]}" for k, v in parsed.query)
        text += f" (only where {criteria})"
    return text
