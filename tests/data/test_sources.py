"""Input discovery and streaming: directories in order, gzip, tar members, NDJSON chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from import_helpers import patient, write_gz, write_json, write_ndjson, write_tar

from carebase.data.sources import UnreadablePath, chunks_of, input_files, iter_documents, kind_of


def test_kinds_by_name() -> None:
    assert kind_of("a.json") == "json" and kind_of("A.JSON.gz") == "json"
    assert kind_of("x.ndjson") == kind_of("x.jsonl.gz") == "ndjson"
    assert kind_of("s.tar.gz") == kind_of("s.tgz") == "archive"
    assert kind_of("notes.txt") is None


def test_directories_are_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    write_json(tmp_path / "b" / "2.json", patient("2"))
    write_json(tmp_path / "a.json", patient("1"))
    (tmp_path / "readme.txt").write_text("not an input")
    assert [p.relative_to(tmp_path).as_posix() for p in input_files([str(tmp_path)])] == [
        "a.json",
        "b/2.json",
    ]


def test_missing_and_unknown_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadablePath, match="no such file"):
        input_files([str(tmp_path / "absent.json")])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(UnreadablePath, match="not a file we import"):
        input_files([str(tmp_path / "x.csv")])


def test_archive_members_stream_as_documents(tmp_path: Path) -> None:
    tar = write_tar(
        tmp_path / "in.tar.gz",
        {"fhir/p.json": b'{"resourceType":"Patient","id":"a"}', "fhir/notes.txt": b"skip"},
    )
    documents = [(d.source, d.stream.read()) for d in iter_documents(tar)]
    assert documents == [(f"{tar}!fhir/p.json", b'{"resourceType":"Patient","id":"a"}')]


def test_ndjson_is_cut_into_chunks_of_lines(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", [patient(str(i)) for i in range(5)])
    gz = write_gz(tmp_path / "p.ndjson.gz", path.read_bytes())
    for source in (path, gz):
        documents = iter_documents(source)  # the file stays open while the generator lives
        chunks = list(chunks_of(next(documents), lines=2))
        assert [(c.first_line, c.last) for c in chunks] == [(1, False), (3, False), (5, True)]
        assert chunks[1].data.split(b"\n")[0] == b'{"resourceType":"Patient","id":"2",' + (
            b'"name":[{"family":"Ng"}]}'
        )


def test_a_truncated_gzip_ends_in_an_error_chunk(tmp_path: Path) -> None:
    data = write_gz(tmp_path / "p.ndjson.gz", b'{"resourceType":"Patient","id":"a"}\n' * 500)
    data.write_bytes(data.read_bytes()[:40])
    documents = iter_documents(data)
    chunks = list(chunks_of(next(documents)))
    assert chunks[-1].error is not None and "cannot read" in chunks[-1].error
