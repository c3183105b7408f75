"""OperationOutcome helpers: re-rooting issue locations under a Bundle entry."""

from __future__ import annotations

from carebase.errors import Issue
from carebase.fhir.operation_outcome import prefix_locations


def test_prefix_locations_reroots_resource_paths() -> None:
    issues = [
        Issue("error", "value", "bad gender", ["Patient.gender"]),
        Issue("error", "invalid", "no location"),
        Issue("error", "invalid", "bare type", ["Patient"]),
        Issue("error", "invalid", "request part", ["request.url"]),
    ]
    out = prefix_locations(issues, "Bundle.entry[1]")
    assert [i.expression for i in out] == [
        ["Bundle.entry[1].resource.gender"],
        ["Bundle.entry[1]"],
        ["Bundle.entry[1].resource"],
        ["Bundle.entry[1].request.url"],
    ]


def test_prefix_locations_twice_changes_nothing() -> None:
    once = prefix_locations([Issue("error", "value", "x", ["Patient.gender"])], "Bundle.entry[1]")
    twice = prefix_locations(once, "Bundle.entry[1]")
    assert twice[0].expression == ["Bundle.entry[1].resource.gender"]
