"""ViewRunner.run_files / write_files defaults and the NDJSON reader behind them."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from carebase.analytics import get_runner
from carebase.errors import BadRequest

VIEW = {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}


def test_run_files_reads_plain_and_gzipped_ndjson(tmp_path: Path) -> None:
    plain = tmp_path / "a.ndjson"
    plain.write_bytes(b'{"resourceType": "Patient", "id": "p1"}\n\n')
    zipped = tmp_path / "b.ndjson.gz"
    with gzip.open(zipped, "wb") as handle:
        handle.write(orjson.dumps({"resourceType": "Patient", "id": "p2"}) + b"\n")
        handle.write(orjson.dumps({"resourceType": "Observation", "id": "o1"}) + b"\n")
    rows = list(get_runner("python").run_files(VIEW, [plain, zipped]))
    assert rows == [{"id": "p1"}, {"id": "p2"}]


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_bytes(b'{"resourceType": "Patient", "id": "p1"}\n{oops\n')
    with pytest.raises(BadRequest, match=r"bad\.ndjson:2: not valid JSON"):
        list(get_runner("python").run_files(VIEW, [path]))


def test_missing_or_misnamed_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no such NDJSON file"):
        list(get_runner("python").run_files(VIEW, [tmp_path / "nope.ndjson"]))
    other = tmp_path / "data.csv"
    other.write_text("id\n")
    with pytest.raises(BadRequest, match="not an NDJSON file"):
        list(get_runner("python").run_files(VIEW, [other]))


def test_python_engine_has_no_native_writer(tmp_path: Path) -> None:
    runner = get_runner("python")
    assert runner.write_files(VIEW, [], "csv", tmp_path / "out.csv") is None
    with pytest.raises(BadRequest, match="unknown output format 'xlsx'"):
        runner.write_files(VIEW, [], "xlsx", tmp_path / "out.xlsx")
