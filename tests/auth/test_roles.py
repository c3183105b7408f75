"""Role ceilings (`auth.roles.permitted_scopes`): a token never grants more than its role."""

from __future__ import annotations

import pytest

from carebase.auth.roles import ROLE_SCOPE_CEILING, permitted_scopes
from carebase.auth.scopes import ScopeError


def test_every_role_has_a_ceiling() -> None:
    assert set(ROLE_SCOPE_CEILING) == {
        "admin", "clinician", "nurse", "front-desk", "patient", "researcher", "service"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("role", "requested", "kept"),
    [
        ("patient", ["patient/*.rs", "openid"], ["patient/*.rs", "openid"]),
        ("patient", ["patient/*.cruds"], ["patient/*.rs"]),
        ("patient", ["user/*.rs", "system/*.rs"], []),
        ("patient", ["patient/Communication.cr"], ["patient/Communication.cr"]),
        ("nurse", ["user/*.cruds"], ["user/*.crus"]),
        ("clinician", ["system/*.rs"], []),
        ("clinician", ["patient/Observation.rs"], ["patient/Observation.rs"]),
        ("front-desk", ["user/Observation.rs", "user/Patient.cruds"], ["user/Patient.crus"]),
        ("researcher", ["user/*.rs", "launch"], ["launch"]),
        ("service", ["system/*.cruds"], ["system/*.cruds"]),
        (None, ["system/*.rs", "openid"], ["openid"]),
        ("unknown-role", ["user/*.rs"], []),
    ],
)
def test_permitted_scopes(role: str | None, requested: list[str], kept: list[str]) -> None:
    assert permitted_scopes(role, requested) == kept


def test_granular_scopes_keep_their_criteria() -> None:
    kept = permitted_scopes("patient", ["patient/Observation.cruds?category=laboratory"])
    assert kept == ["patient/Observation.rs?category=laboratory"]


def test_malformed_scopes_raise() -> None:
    with pytest.raises(ScopeError):
        permitted_scopes("admin", ["user/*.nope"])
