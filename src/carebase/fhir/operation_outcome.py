"""Building OperationOutcome resources from carebase errors and validation issues."""

from __future__ import annotations

from collections.abc import Iterable

from carebase.errors import CarebaseError, Issue

#: Issue severities that make a set of issues "failed" (FHIR IssueSeverity).
FAILING_SEVERITIES = frozenset({"fatal", "error"})


def outcome(issues: Iterable[Issue]) -> dict[str, object]:
    """An OperationOutcome listing `issues` (an "All OK" information issue when empty)."""
    items = [issue.to_fhir() for issue in issues]
    if not items:
        items = [Issue("information", "informational", "All OK").to_fhir()]
    return {"resourceType": "OperationOutcome", "issue": items}


def information(message: str, code: str = "informational") -> dict[str, object]:
    """An OperationOutcome with one information issue (e.g. after a successful write)."""
    return outcome([Issue("information", code, message)])


def from_error(error: CarebaseError) -> dict[str, object]:
    """The OperationOutcome describing a carebase error."""
    return error.operation_outcome()


def error_outcome(message: str, code: str = "exception") -> dict[str, object]:
    """An OperationOutcome with one error issue and a plain message."""
    return outcome([Issue("error", code, message)])


def prefix_locations(issues: Iterable[Issue], prefix: str) -> list[Issue]:
    """Copies of `issues` whose expressions are re-rooted under `prefix`.

    Used for errors inside Bundle entries: `Patient.name` becomes
    `Bundle.entry[3].resource.name`; an issue without a location gets `prefix` itself. An
    expression already under `prefix` is kept, so re-rooting twice changes nothing.
    """
    out: list[Issue] = []
    for issue in issues:
        exprs: list[str] = []
        for expr in issue.expression or [""]:
            head, dot, rest = expr.partition(".")
            if expr == prefix or expr.startswith((prefix + ".", prefix + "[")):
                exprs.append(expr)
            elif not expr:
                exprs.append(prefix)
            elif head[:1].isupper() and dot:
                exprs.append(f"{prefix}.resource.{rest}")
            elif head[:1].isupper():
                exprs.append(f"{prefix}.resource")
            else:
                exprs.append(f"{prefix}.{expr}")
        out.append(Issue(issue.severity, issue.code, issue.diagnostics, exprs))
    return out


def has_errors(issues: Iterable[Issue]) -> bool:
    """True when any issue is an error or fatal."""
    return any(issue.severity in FAILING_SEVERITIES for issue in issues)
