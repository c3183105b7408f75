"""The errors of SQL on FHIR views: a bad ViewDefinition (400) or a row that breaks a rule (422)."""

from __future__ import annotations

from carebase.errors import InvalidResource, Unprocessable


class ViewDefinitionError(InvalidResource):
    """A ViewDefinition (or one of its FHIRPath expressions) is invalid; `location` names the
    element, e.g. `ViewDefinition.select[0].column[1].path`."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}", location=location)
        self.location = location


class FhirPathSyntaxError(ViewDefinitionError):
    """A FHIRPath expression does not parse; the message quotes it and gives the position."""

    def __init__(self, expression: str, position: int, problem: str, location: str = "") -> None:
        where = location or "FHIRPath"
        super().__init__(
            where,
            f"cannot parse FHIRPath {expression!r} at position {position}: {problem}",
        )
        self.expression = expression
        self.position = position


class ViewEvaluationError(Unprocessable):
    """A valid view met data it cannot turn into a row (several values for a single-valued
    column, a non-boolean `where`); the message names the resource and the view element."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}", location=location)
        self.location = location
