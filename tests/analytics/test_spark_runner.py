"""Spark engine (one small local session for the module): the official suite, identity with
the other engines on Synthea, files in and out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from suite_cases import SUITE, SYNTHEA_VIEWS, check_boundaries, sorted_rows, synthea_resources

from carebase.analytics import ViewEvaluationError, get_runner
from carebase.analytics.conformance_report import main as conformance_main
from carebase.analytics.conformance_report import summary
from carebase.analytics.runner import ViewRunner
from carebase.analytics.spark_runner import configure_session
from carebase.analytics.views import load_view, view_names
from carebase.errors import BadRequest

pytestmark = [pytest.mark.spark, pytest.mark.slow]

pytest.importorskip("pyspark", reason="the spark extra is not installed")


#: a small, quick session for tests: one core, one shuffle partition, and a JVM that stops at
#: its first JIT tier (the optimising compiler costs more CPU than it saves in a short run)
TEST_SETTINGS = {
    "spark.master": "local[1]",
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


@pytest.fixture(scope="module")
def spark_runner() -> ViewRunner:
    configure_session(TEST_SETTINGS)
    return get_runner("spark")


def test_conformance_suite_and_report(spark_runner: ViewRunner, tmp_path: Path) -> None:
    # the whole suite in one test (through the report command, so test_report.json is checked)
    if not SUITE.is_dir():
        pytest.skip(f"no suite at {SUITE}")
    out = tmp_path / "test_report.json"
    status = conformance_main([str(SUITE), str(out), "spark"])
    report = json.loads(out.read_text())
    failed = {
        f"{name}: {t['name']}": t["result"].get("reason")
        for name, suite in report.items()
        for t in suite["tests"]
        if not t["result"]["passed"]
    }
    assert not failed, "\n".join(f"{case}: {why}" for case, why in failed.items())
    assert summary(report) == (134, 134) and status == 0


def test_same_rows_as_python_and_duckdb_on_synthea(
    spark_runner: ViewRunner, synthea_tar: Path
) -> None:
    # the test views and every library view: Spark, DuckDB and Python give the same rows
    resources = synthea_resources(synthea_tar, bundles=20)
    views = {**SYNTHEA_VIEWS, **{name: load_view(name) for name in view_names()}}
    python, duckdb = get_runner("python"), get_runner("duckdb")
    for name, view in views.items():
        expected = sorted_rows(python.run(view, resources))
        assert len(expected) >= 20, name
        assert sorted_rows(duckdb.run(view, resources)) == expected, name
        assert sorted_rows(spark_runner.run(view, resources)) == expected, name


def test_decimal_boundaries_follow_written_digits(spark_runner: ViewRunner) -> None:
    check_boundaries(spark_runner)


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


def test_errors_name_the_problem(spark_runner: ViewRunner, tmp_path: Path) -> None:
    view = {"resource": "Patient", "select": [{"column": [{"name": "n", "path": "name.family"}]}]}
    patient = {"resourceType": "Patient", "id": "p", "name": [{"family": "A"}, {"family": "B"}]}
    with pytest.raises(ViewEvaluationError) as caught:
        list(spark_runner.run(view, [patient]))
    assert caught.value.location == "ViewDefinition.select[0].column[0].path"
    assert str(caught.value).endswith("narrow the path (e.g. first())")
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Patient"}\n{oops\n')
    with pytest.raises(BadRequest, match=r"bad\.ndjson"):
        list(spark_runner.run_files(view, [bad]))
