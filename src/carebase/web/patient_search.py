"""Finding patients: by name, MRN or other identifier, birth date, or name and birth date.

A query is split into words; a word that is a date (YYYY, YYYY-MM or YYYY-MM-DD) searches
the birth date, the other words the name (each word must match, FHIR `name` prefix
matching). A single word that is not a date is also tried as an identifier (MRN).
"""

from __future__ import annotations

import re

from carebase.web import fhir_view as fv
from carebase.web.records import Records, Resource

_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
RESULTS = 20


def criteria(query: str) -> list[tuple[str, str]]:
    """The Patient search parameters of a query (empty for an empty query)."""
    params: list[tuple[str, str]] = []
    for word in query.split():
        if _DATE.match(word):
            params.append(("birthdate", word))
        else:
            params.append(("name", word))
    return params


def find_patients(records: Records, query: str) -> list[Resource]:
    """Patients matching `query` among those the user may see (at most RESULTS)."""
    params = criteria(query[:200])
    if not params:
        return []
    found: dict[str, Resource] = {}
    words = query.split()
    if len(words) == 1 and not _DATE.match(words[0]):
        for patient in records.search("Patient", [("identifier", words[0])], RESULTS):
            found[str(patient["id"])] = patient
    for patient in records.search("Patient", [*params, ("_sort", "family")], RESULTS):
        found.setdefault(str(patient["id"]), patient)
    return list(found.values())[:RESULTS]


def summary(patient: Resource) -> dict[str, object]:
    """What a search result line shows."""
    return {
        "id": patient.get("id"),
        "name": fv.human_name(patient),
        "birth_date": patient.get("birthDate") or "",
        "age": fv.age(patient.get("birthDate")),
        "sex": patient.get("gender") or "",
        "mrn": fv.mrn(patient) or "",
    }


def duplicates(records: Records, family: str, given: str, birth_date: str) -> list[Resource]:
    """Patients with the same family name, given name and birth date (registration check)."""
    params = [("family:exact", family), ("birthdate", birth_date)]
    firsts = given.split()
    if firsts:
        params.append(("given:exact", firsts[0]))
    return records.search("Patient", params, 10)
