"""The R4 Patient compartment as the access policy needs it: which types are in it, and which
patients a stored resource is about (for the audit trail's `patients`).

Membership is defined by the official CompartmentDefinition `patient` (the same data the
compartment search uses): a resource is in Patient X's compartment when one of its type's
compartment search parameters refers to Patient/X.
"""

from __future__ import annotations

import re
from functools import cache

from carebase.fhir.definitions.loader import get_definitions

#: A local Patient reference inside compact JSON (`"reference":"Patient/123"`).
_PATIENT_REFERENCE = re.compile(rb'"reference":\s*"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})"')
#: Patients named per resource in an audit entry, at most (a Group can list thousands).
MAX_PATIENTS = 50


@cache
def compartment_types() -> frozenset[str]:
    """Every resource type in the Patient compartment, Patient itself included."""
    return frozenset({"Patient", *get_definitions().patient_compartment})


def in_compartment(type_: str) -> bool:
    """Whether resources of `type_` can belong to a patient's compartment."""
    return type_ in compartment_types()


def patients_of(type_: str, id_: str, body: bytes | None) -> tuple[str, ...]:
    """The ids of the patients a resource is about: a Patient is about itself; a resource
    of a compartment type about the patients it refers to; other types about nobody.

    Reads the stored bytes with one regular expression instead of parsing them, so the
    audit of a read costs microseconds.
    """
    if type_ == "Patient":
        return (id_,)
    if body is None or not in_compartment(type_):
        return ()
    found = dict.fromkeys(m.decode("ascii") for m in _PATIENT_REFERENCE.findall(body))
    return tuple(found)[:MAX_PATIENTS]
