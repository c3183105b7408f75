"""Benchmark: flattening Observations with a SQL on FHIR view on DuckDB, Python and Spark.

Usage: .venv/bin/python bench/bench_views.py [--rows 1000000] [--runs 3] [--quick]
    [--data-dir DIR] [--no-spark]
Builds NDJSON Observations once (the Synthea sample's Observations, repeated with fresh ids,
under --data-dir), then times each engine over the same file side by side: DuckDB and
Spark write Parquet natively (`write_files`), Python streams rows from `run_files` (its
rows are counted, not written). Figures (medians) go to the `views` section of
docs/benchmarks.md. --quick: 100,000 rows, one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_indexer import DEFAULT, load
from report import machine, write_section

from carebase.analytics import get_runner

VIEW: dict[str, Any] = {
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {
                    "name": "loinc",
                    "path": "code.coding.where(system = 'http://loinc.org').code.first()",
                },
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).unit"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
            ]
        }
    ],
}


def synthea_tar() -> Path:
    """The Synthea sample: under $CAREBASE_SHARED_DIR when set, else next to the repo."""
    shared = os.environ.get("CAREBASE_SHARED_DIR")
    return Path(shared) / "data" / DEFAULT.name if shared else DEFAULT


def build(path: Path, rows: int) -> Path:
    """NDJSON of `rows` Observations at `path` (kept for later runs)."""
    if path.exists():
        return path
    observations = [r for r in load(synthea_tar()) if r.get("resourceType") == "Observation"]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for number in range(rows):
            resource = dict(observations[number % len(observations)])
            resource["id"] = f"obs-{number}"
            out.write(orjson.dumps(resource) + b"\n")
    partial.rename(path)
    return path


def time_engine(engine: str, data: Path, runs: int) -> tuple[float, int]:
    """(median seconds, rows) for one engine over `data`."""
    runner = get_runner(engine)
    times, count = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "spark":  # start the session outside the timing
            runner.write_files(VIEW, [data], "parquet", Path(tmp) / "warm.parquet")
        for run in range(runs):
            start = time.perf_counter()
            written = runner.write_files(VIEW, [data], "parquet", Path(tmp) / f"{run}.parquet")
            if written is None:  # no native writer (Python): stream the rows
                written = sum(1 for _ in runner.run_files(VIEW, [data]))
            times.append(time.perf_counter() - start)
            count = written
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, one run")
    parser.add_argument("--data-dir", type=Path, default=Path("/work/bench-data/views"))
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()
    rows, runs = (100_000, 1) if args.quick else (args.rows, args.runs)
    data = build(args.data_dir / f"observations-{rows}.ndjson", rows)
    engines = ["duckdb", "python"] + ([] if args.no_spark else ["spark"])
    results = {}
    for engine in engines:
        seconds, count = time_engine(engine, data, runs)
        results[engine] = (seconds, count)
        print(f"{engine}: {count:,} rows in {seconds:.2f} s = {count / seconds:,.0f} rows/s")
    duck, python = results["duckdb"][0], results["python"][0]
    lines = [
        "## SQL on FHIR views: flattening Observations (`bench/bench_views.py`)",
        "",
        f"Machine: {machine()}. {rows:,} Observations as one NDJSON file "
        f"({data.stat().st_size / 2**20:,.0f} MiB; Synthea Observations with fresh ids), view "
        "id, patient key, LOINC code, value, unit, effective; "
        f"median of {runs} run(s){' (--quick)' if args.quick else ''}. DuckDB and Spark write "
        "Parquet natively; Python streams rows (counted, not written).",
        "",
        "| engine | seconds | rows/s |",
        "|---|---:|---:|",
    ]
    for engine, (seconds, count) in results.items():
        lines.append(f"| {engine} | {seconds:.2f} | {count / seconds:,.0f} |")
    lines += ["", f"DuckDB/Python speed ratio: {python / duck:.1f}x."]
    if "spark" in results:
        lines[-1] += f" Spark local[2] (session already started): {results['spark'][0]:.1f} s."
    write_section("views", "\n".join(lines))


if __name__ == "__main__":
    main()
