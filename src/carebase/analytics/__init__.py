"""SQL on FHIR v2: ViewDefinition model, FHIRPath subset and view runners (Python, DuckDB...)."""

from carebase.analytics.runner import ViewRunner, get_runner, register_runner, runner_names
from carebase.analytics.view_errors import (
    FhirPathSyntaxError,
    ViewDefinitionError,
    ViewEvaluationError,
)
from carebase.analytics.view_model import ViewDefinition, parse_view_definition

__all__ = [
    "FhirPathSyntaxError",
    "ViewDefinition",
    "ViewDefinitionError",
    "ViewEvaluationError",
    "ViewRunner",
    "get_runner",
    "parse_view_definition",
    "register_runner",
    "runner_names",
]
