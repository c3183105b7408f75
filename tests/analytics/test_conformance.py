"""The official SQL on FHIR v2 suite (../shared/conformance) against the Python runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from suite_cases import SUITE, suite_params, suite_resources

from carebase.analytics import get_runner
from carebase.analytics.conformance_report import run_case, run_suite, suite_files, summary


@pytest.mark.parametrize(("path", "case"), suite_params())
def test_case(path: Path, case: dict[str, Any]) -> None:
    passed, reason = run_case(get_runner("python"), suite_resources(path), case)
    assert passed, reason


def test_report_has_official_shape(tmp_path: Path) -> None:
    if not SUITE.is_dir():
        pytest.skip(f"no suite at {SUITE}")
    report = run_suite(get_runner("python"), SUITE)
    assert set(report) == {p.name for p in suite_files(SUITE)}
    first = report["basic.json"]["tests"][0]
    assert first["name"] == "basic attribute"
    assert first["result"]["passed"] is True
    assert summary(report) == (134, 134)
