"""Runs the SQL on FHIR v2 conformance suite with any ViewRunner and writes the official report."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carebase.analytics.runner import ViewRunner
from carebase.errors import CarebaseError


def _canonical(value: Any) -> str:
    # rows compare as JSON text with sorted keys, numbers normalised (5 == 5.0)
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, Mapping):
            return {k: norm(x) for k, x in v.items()}
        return str(v)

    return json.dumps(norm(value), sort_keys=True)


def run_case(
    runner: ViewRunner, resources: list[dict[str, Any]], case: Mapping[str, Any]
) -> tuple[bool, str]:
    """(passed, why not) for one test case of a suite file."""
    try:
        rows = list(runner.run(case["view"], resources))
    except CarebaseError as exc:
        if case.get("expectError"):
            return True, ""
        return False, f"unexpected error: {exc}"
    if case.get("expectError"):
        return False, f"expected an error, got {len(rows)} rows"
    if "expectCount" in case:
        ok = len(rows) == case["expectCount"]
        return ok, "" if ok else f"expected {case['expectCount']} rows, got {len(rows)}"
    if "expectColumns" in case:
        got_columns = list(rows[0]) if rows else list(ViewRunner.parse(case["view"]).column_names)
        if got_columns != list(case["expectColumns"]):
            return False, f"columns {got_columns} != expected {case['expectColumns']}"
    expected = Counter(_canonical(r) for r in case.get("expect", []))
    got = Counter(_canonical(r) for r in rows)
    if expected == got:
        return True, ""
    missing = list((expected - got).elements())[:3]
    extra = list((got - expected).elements())[:3]
    return False, f"rows differ; missing {missing}, unexpected {extra}"


def suite_files(suite_dir: Path) -> list[Path]:
    """The test files of a suite folder (everything but the schema), sorted."""
    return sorted(p for p in suite_dir.glob("*.json") if not p.name.endswith("schema.json"))


def run_suite(runner: ViewRunner, suite_dir: Path) -> dict[str, Any]:
    """The report `{file: {"tests": [{"name", "result": {"passed", "reason"?}}]}}`."""
    report: dict[str, Any] = {}
    for path in suite_files(suite_dir):
        suite = json.loads(path.read_text(encoding="utf-8"))
        results = []
        for case in suite["tests"]:
            passed, reason = run_case(runner, suite.get("resources", []), case)
            result: dict[str, Any] = {"passed": passed}
            if reason:
                result["reason"] = reason
            results.append({"name": case["title"], "result": result})
        report[path.name] = {"tests": results}
    return report


def write_report(runner: ViewRunner, suite_dir: Path, out_path: Path) -> dict[str, Any]:
    """Runs the suite and writes `test_report.json`-style output to `out_path`."""
    report = run_suite(runner, suite_dir)
    out_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def summary(report: Mapping[str, Any]) -> tuple[int, int]:
    """(passed, total) of a report."""
    results = [t["result"]["passed"] for f in report.values() for t in f["tests"]]
    return sum(results), len(results)


def main(argv: list[str] | None = None) -> int:
    """`python -m carebase.analytics.conformance_report SUITE_DIR OUT.json [ENGINE]`;
    ENGINE is python (default), duckdb or spark."""
    import sys

    from carebase.analytics.runner import get_runner

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(main.__doc__, file=sys.stderr)
        return 2
    runner = get_runner(args[2] if len(args) == 3 else "python")
    passed, total = summary(write_report(runner, Path(args[0]), Path(args[1])))
    print(f"{runner.name}: {passed} of {total} cases passed; report in {args[1]}")
    return 0 if passed == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
