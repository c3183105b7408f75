"""Spark engine (local[2], one session for the module): the official suite, Synthea identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from suite_cases import SUITE, SYNTHEA_VIEWS, sorted_rows, synthea_resources

from carebase.analytics import get_runner
from carebase.analytics.conformance_report import run_suite
from carebase.analytics.runner import ViewRunner

pytestmark = [pytest.mark.spark, pytest.mark.slow]

#: cases Spark cannot pass: VARIANT stores 1.0 as DECIMAL(1,0), so the written precision
#: lowBoundary/highBoundary need is gone before the query sees it
SPARK_KNOWN_FAILURES = {
    "fn_boundary.json: decimal lowBoundary",
    "fn_boundary.json: decimal highBoundary",
}
pytest.importorskip("pyspark", reason="the spark extra is not installed")


@pytest.fixture(scope="module")
def spark_runner() -> ViewRunner:
    return get_runner("spark")


def test_conformance_suite(spark_runner: ViewRunner) -> None:
    # one test for the whole suite: every case is a Spark job, so they are not parametrised
    if not SUITE.is_dir():
        pytest.skip(f"no suite at {SUITE}")
    report = run_suite(spark_runner, SUITE)
    failed = {
        f"{name}: {t['name']}": t["result"].get("reason")
        for name, suite in report.items()
        for t in suite["tests"]
        if not t["result"]["passed"]
    }
    unexpected = {case: why for case, why in failed.items() if case not in SPARK_KNOWN_FAILURES}
    assert not unexpected, "\n".join(f"{case}: {why}" for case, why in unexpected.items())
    assert set(failed) == SPARK_KNOWN_FAILURES  # a fix should drop the known entries


def test_same_rows_as_python_on_synthea(spark_runner: ViewRunner, synthea_tar: Path) -> None:
    resources = synthea_resources(synthea_tar, bundles=20)
    python = get_runner("python")
    for name, view in SYNTHEA_VIEWS.items():
        expected = sorted_rows(python.run(view, resources))
        assert len(expected) >= 20, name
        assert sorted_rows(spark_runner.run(view, resources)) == expected, name


def test_files_in_and_parquet_out(spark_runner: ViewRunner, tmp_path: Path) -> None:
    patients: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male"}
        for i in range(4)
    ]
    data = tmp_path / "patients.ndjson"
    data.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in patients))
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id"}, {"name": "g", "path": "gender"}]}],
    }
    rows = sorted_rows(spark_runner.run_files(view, [data]))
    assert rows == sorted_rows(get_runner("python").run(view, patients))
    out = tmp_path / "out.parquet"
    assert spark_runner.write_files(view, [data], "parquet", out) == 4
    assert sorted_rows(pq.read_table(out).to_pylist()) == rows
    assert spark_runner.write_files(view, [data], "json", tmp_path / "out.json") is None
