"""The access policy (`auth.policy`) and Patient compartment helpers (`auth.compartment`):
pure decisions from a Principal, no database."""

from __future__ import annotations

import pytest

from carebase.auth.compartment import compartment_types, in_compartment, patients_of
from carebase.auth.policy import AccessPolicy, permissions_for, policy_for
from carebase.auth.principal import DEVELOPMENT_PRINCIPAL, Principal
from carebase.errors import Forbidden
from carebase.store.search_restriction import Visibility


def user(role: str, scopes: tuple[str, ...], **extra: str) -> Principal:
    return Principal(subject=role, role=role, scopes=frozenset(scopes), **extra)  # type: ignore[arg-type]


def test_permission_letters() -> None:
    assert permissions_for("read") == permissions_for("vread") == "r"
    assert permissions_for("history-instance") == "r"
    assert permissions_for("search-type") == permissions_for("history-system") == "s"
    assert permissions_for("create") == "c" and permissions_for("patch") == "u"
    assert permissions_for("delete", conditional=True) == "ds"
    assert permissions_for("update", conditional=True) == "us"


def test_system_and_development_see_everything() -> None:
    service = Principal("svc", kind="service", role="service", scopes=frozenset({"system/*.cruds"}))
    for principal in (service, DEVELOPMENT_PRINCIPAL):
        policy = AccessPolicy(principal)
        assert policy.require("Observation", "r") == Visibility()
        assert policy.restriction("s") is None  # the fast path: no narrowing at all


def test_narrow_system_scope_restricts_types() -> None:
    policy = AccessPolicy(Principal("svc", role="service", scopes=frozenset({"system/Patient.rs"})))
    restriction = policy.restriction("s")
    assert restriction is not None and set(restriction.types) == {"Patient"}
    with pytest.raises(Forbidden, match=r"system/Observation\.s"):
        policy.require("Observation", "s")


def test_clinician_with_organization_is_narrowed_to_it() -> None:
    policy = AccessPolicy(user("clinician", ("user/*.cruds",), organization="org1"))
    assert policy.require("Observation", "r") == Visibility(organization="org1")
    assert policy.require("Patient", "u") == Visibility(organization="org1")
    assert policy.require("Practitioner", "r") == Visibility()  # not patient data


def test_admin_and_users_without_organization_are_not() -> None:
    assert (
        AccessPolicy(user("admin", ("user/*.rs",), organization="o")).require("Patient", "r")
        == Visibility()
    )
    assert AccessPolicy(user("clinician", ("user/*.rs",))).require("Patient", "r") == Visibility()


def test_break_glass_lifts_the_organization_for_clinicians_and_nurses_only() -> None:
    for role in ("clinician", "nurse"):
        glass = user(role, ("user/*.rs",), organization="o").with_break_glass("emergency")
        assert AccessPolicy(glass).require("Observation", "r") == Visibility()
    desk = user("front-desk", ("user/Patient.rs",), organization="o").with_break_glass("x")
    assert AccessPolicy(desk).require("Patient", "r") == Visibility(organization="o")


def test_patient_context() -> None:
    policy = AccessPolicy(user("patient", ("patient/*.rs",), patient="A"))
    assert policy.require("Observation", "r") == Visibility(patient="A")
    assert policy.require("Patient", "s") == Visibility(patient="A")
    assert policy.require("Practitioner", "r") == Visibility()  # outside the compartment
    with pytest.raises(Forbidden, match=r"patient/Observation\.c"):
        policy.require("Observation", "c")


def test_patient_scopes_without_a_patient_are_403() -> None:
    policy = AccessPolicy(user("patient", ("patient/*.rs",)))
    with pytest.raises(Forbidden, match="launch context"):
        policy.require("Observation", "r")
    assert policy.restriction("r") is not None and policy.restriction("r").of("Observation") is None  # type: ignore[union-attr]


def test_the_role_ceiling_applies_at_use() -> None:
    # a token claiming more than the role allows grants only what the role may hold
    policy = AccessPolicy(
        user("patient", ("user/*.cruds", "patient/Observation.cruds"), patient="A")
    )
    assert policy.require("Observation", "r") == Visibility(patient="A")
    with pytest.raises(Forbidden):
        policy.require("Observation", "d")
    with pytest.raises(Forbidden):
        policy.require("Patient", "r")


def test_granular_scopes_become_criteria() -> None:
    policy = AccessPolicy(
        user("patient", ("patient/Observation.rs?category=laboratory",), patient="A")
    )
    assert policy.require("Observation", "s") == Visibility(
        patient="A", criteria=((("category", "laboratory"),),)
    )
    assert not policy.may_touch("Condition") and policy.may_touch("Observation")


def test_policies_are_cached_per_principal() -> None:
    principal = user("nurse", ("user/*.rs",))
    assert policy_for(principal) is policy_for(principal)


def test_compartment_helpers() -> None:
    assert in_compartment("Observation") and in_compartment("Patient")
    assert not in_compartment("Practitioner") and "Medication" not in compartment_types()
    body = b'{"subject":{"reference":"Patient/A"},"performer":[{"reference":"Patient/B"}]}'
    assert patients_of("Observation", "o1", body) == ("A", "B")
    assert patients_of("Patient", "A", b"{}") == ("A",)
    assert patients_of("Practitioner", "p", b'{"reference":"Patient/A"}') == ()
    assert patients_of("Observation", "o1", None) == ()
