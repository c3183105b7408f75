"""FHIR resources for the people and places: Organization, Practitioner and Patient, plus the
deterministic ids and the shared building blocks (references, codings, instants) that the
clinical builders use too."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from carebase.data.synthetic.codes import (
    ICD10,
    IDENTIFIER_TYPE,
    MRN_SYSTEM,
    NPI,
    SNOMED,
    Problem,
)
from carebase.data.synthetic.demographics import COUNTRY, SITES, STATE, Clinician, Site
from carebase.data.synthetic.timeline import Timeline

Resource = dict[str, Any]


# Marks every generated resource as test data (HL7 v3 ActReason HTEST), so nobody mistakes a
# synthetic record for a real one and so it can be found and removed with one search.
def synthetic_meta() -> dict[str, Any]:
    """A new meta (the store adds versionId and lastUpdated to it, so never shared)."""
    return {
        "tag": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": "HTEST",
                "display": "test health data",
            }
        ]
    }


class Ids:
    """Deterministic resource ids: UUIDv5 of the seed and a path naming the thing."""

    def __init__(self, seed: int) -> None:
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:carebase:synthetic:{seed}")
        self._namespace = namespace.bytes

    def of(self, *parts: object) -> str:
        """The id of the thing named by `parts` (e.g. "Patient", 17): exactly
        `uuid.uuid5(namespace, "Patient/17")`, computed without the UUID object (ids are a
        third of the generator's time otherwise)."""
        name = "/".join([str(p) for p in parts]).encode()
        digest = bytearray(hashlib.sha1(self._namespace + name).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = digest.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def ref(self, type_: str, *parts: object) -> dict[str, str]:
        """A Reference to `type_/id-of(type_, *parts)`."""
        return {"reference": f"{type_}/{self.of(type_, *parts)}"}


def instant(moment: datetime) -> str:
    """A FHIR dateTime/instant in UTC, to the second."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def coding(system: str, code: str, display: str) -> dict[str, str]:
    """One Coding."""
    return {"system": system, "code": code, "display": display}


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    """A CodeableConcept of one Coding, with the display as text."""
    return {"coding": [coding(system, code, display)], "text": display}


def problem_concept(problem: Problem) -> dict[str, Any]:
    """A diagnosis coded in SNOMED CT (clinical) and ICD-10-CM (billing)."""
    return {
        "coding": [
            coding(SNOMED, problem.snomed, problem.snomed_display),
            coding(ICD10, problem.icd10, problem.icd10_display),
        ],
        "text": problem.snomed_display,
    }


def _address(line: str, city: str, postal_code: str, use: str) -> dict[str, Any]:
    return {
        "use": use,
        "line": [line],
        "city": city,
        "state": STATE,
        "postalCode": postal_code,
        "country": COUNTRY,
    }


def organization(ids: Ids, site: Site) -> Resource:
    """A clinic or hospital."""
    return {
        "resourceType": "Organization",
        "id": ids.of("Organization", site.key),
        "meta": synthetic_meta(),
        "identifier": [{"system": "urn:carebase:synthetic:organization", "value": site.key}],
        "active": True,
        "type": [
            concept(
                "http://terminology.hl7.org/CodeSystem/organization-type",
                "prov",
                "Healthcare Provider",
            )
        ],
        "name": site.name,
        "telecom": [{"system": "phone", "value": "617-555-0100", "use": "work"}],
        "address": [
            _address(
                "1 Hospital Drive" if site.hospital else "10 Main Street",
                site.city,
                site.postal_code,
                "work",
            )
        ],
    }


def practitioner(ids: Ids, clinician: Clinician) -> Resource:
    """A doctor or nurse, with an NPI."""
    titles = {"MD": "Doctor of Medicine", "RN": "Registered Nurse"}
    return {
        "resourceType": "Practitioner",
        "id": ids.of("Practitioner", clinician.key),
        "meta": synthetic_meta(),
        "identifier": [{"system": NPI, "value": clinician.npi}],
        "active": True,
        "name": [
            {
                "use": "official",
                "family": clinician.family,
                "given": [clinician.given],
                **({"prefix": ["Dr."]} if clinician.qualification == "MD" else {}),
            }
        ],
        "gender": clinician.sex,
        "qualification": [
            {
                "code": concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0360",
                    clinician.qualification,
                    titles[clinician.qualification],
                )
            }
        ],
    }


def staff_resources(ids: Ids, staff: list[Clinician]) -> list[Resource]:
    """The organisations and practitioners every patient refers to."""
    return [organization(ids, site) for site in SITES] + [practitioner(ids, c) for c in staff]


def patient(ids: Ids, timeline: Timeline) -> Resource:
    """The Patient: identity, contact details, usual doctor and clinic, and death."""
    person = timeline.person
    resource: Resource = {
        "resourceType": "Patient",
        "id": ids.of("Patient", timeline.number),
        "meta": synthetic_meta(),
        "identifier": [
            {
                "use": "usual",
                "type": concept(IDENTIFIER_TYPE, "MR", "Medical record number"),
                "system": MRN_SYSTEM,
                "value": person.mrn,
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "telecom": [{"system": "phone", "value": person.phone, "use": "home"}],
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "address": [_address(person.line, person.city, person.postal_code, "home")],
        "generalPractitioner": [ids.ref("Practitioner", timeline.doctor)],
        "managingOrganization": ids.ref("Organization", timeline.home_site),
    }
    if timeline.death is not None:
        resource["deceasedDateTime"] = instant(timeline.death)
    return resource
