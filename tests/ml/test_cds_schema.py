"""CDS Hooks message checks against every example of the official conformance folder.

`manifest-cdshooks.json` names each example and the reference (Java) validator's outcome
(`outcomes/R4.<name>-logical.json`, no errors = valid). Each example must be judged as the
reference judges it: every error the reference reports is reported here at the same place
(or a place enclosing it), and a valid example gets no error. The one kind of reference
error not followed is "unrecognized extension": the CDS Hooks specification leaves
`extension` open (parties ignore extensions they do not understand), so these are warnings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carebase.errors import Issue
from carebase.ml.cds_schema import errors_of, request_issues, response_issues, services_issues
from shared_data import SHARED

FOLDER = SHARED / "conformance" / "cds-hooks"
pytestmark = pytest.mark.skipif(
    not FOLDER.is_dir(), reason=f"CDS Hooks conformance examples not found in {FOLDER}"
)


def _examples() -> list[tuple[str, Path, Path | None]]:
    """(name, example file, reference outcome or None) of every example in the folder."""
    if not FOLDER.is_dir():
        return []
    named = {
        Path(entry["file"]).name: entry["name"]
        for entry in json.loads((FOLDER / "manifest-cdshooks.json").read_text())
    }
    found = []
    for path in sorted(FOLDER.glob("cdshooks-*.json")):
        name = named.get(path.name)
        outcome = FOLDER / "outcomes" / f"R4.{name}-logical.json" if name else None
        found.append((path.stem, path, outcome if outcome and outcome.is_file() else None))
    return found


def _checker(stem: str) -> Callable[[Any], list[Issue]]:
    if "-request-" in stem:
        return request_issues
    if "-response-" in stem:
        return response_issues
    return services_issues


def _place(expression: str) -> str:
    """A location without the validator's `/*Type/id*/` annotations."""
    return re.sub(r"/\*[^*]*\*/", "", expression)


def _encloses(a: str, b: str) -> bool:
    return a == b or b.startswith(a + ".") or b.startswith(a + "[") or a.startswith(b + ".")


@pytest.mark.parametrize(("stem", "path", "outcome"), _examples(), ids=lambda v: str(v))
def test_example_is_judged_like_the_reference(stem: str, path: Path, outcome: Path | None) -> None:
    mine = errors_of(_checker(stem)(json.loads(path.read_text())))
    if outcome is None:  # not in the manifest: its name says good or bad
        assert stem.endswith(("-good", "-bad")), f"{path.name}: no outcome and no verdict"
        assert bool(mine) == stem.endswith("-bad"), [i.to_fhir() for i in mine]
        return
    expected = [
        issue
        for issue in json.loads(outcome.read_text()).get("issue", [])
        if issue["severity"] in ("error", "fatal")
        and "Unrecognized property" not in issue["details"]["text"]
        and "could not be found so is not allowed" not in issue["details"]["text"]
    ]
    if not expected:
        assert mine == [], [i.to_fhir() for i in mine]
        return
    places = [_place(issue.expression[0]) for issue in mine]
    for issue in expected:
        want = _place(issue["expression"][0])
        assert any(_encloses(p, want) for p in places), (want, issue["details"]["text"], places)


def test_every_example_is_run() -> None:
    # the folder has requests, responses and discovery documents; all of them are tested
    stems = [stem for stem, _, _ in _examples()]
    assert len(stems) >= 20
    assert {("-request-" in s, "-response-" in s) for s in stems} == {
        (True, False), (False, True), (False, False)
    }  # fmt: skip


def test_unknown_extensions_are_warnings_not_errors() -> None:
    body = json.loads((FOLDER / "cdshooks-services-order-select-extensions.json").read_text())
    issues = services_issues(body)
    assert issues and all(issue.severity == "warning" for issue in issues)
    assert "davinci-crd.configuration-options-test" in issues[0].diagnostics


def test_malformed_requests_name_the_field() -> None:
    issues = request_issues({"hook": "patient-view", "hookInstance": "nope", "context": {}})
    places = {issue.expression[0] for issue in errors_of(issues)}
    assert places == {
        "CDSHooksRequest.hookInstance",
        "CDSHooksRequest.context.userId",
        "CDSHooksRequest.context.patientId",
    }
    assert errors_of(request_issues([])) and errors_of(request_issues({"context": 3}))
