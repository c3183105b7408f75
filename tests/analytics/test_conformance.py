"""The official SQL on FHIR v2 suite (../shared/conformance) against the Python runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from carebase.analytics import get_runner
from carebase.analytics.conformance_report import run_case, run_suite, suite_files, summary
from shared_data import SHARED

SUITE = SHARED / "conformance" / "sql-on-fhir-v2"


def _cases() -> list[Any]:
    if not SUITE.is_dir():
        print(f"SQL on FHIR conformance suite not found at {SUITE}; its cases are skipped")
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no suite at {SUITE}"))]
    params = []
    for path in suite_files(SUITE):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for case in suite["tests"]:
            params.append(pytest.param(path, case, id=f"{path.stem}:{case['title']}"))
    return params


@pytest.mark.parametrize(("path", "case"), _cases())
def test_case(path: Path, case: dict[str, Any]) -> None:
    resources = json.loads(path.read_text(encoding="utf-8")).get("resources", [])
    passed, reason = run_case(get_runner("python"), resources, case)
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
