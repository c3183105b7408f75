"""Input files of `carebase import`, streamed: JSON, NDJSON, gzip, tar archives, directories.

`iter_documents` walks the paths the user named (directories recursively, in sorted order)
and yields one `Document` per JSON or NDJSON file, including each member of a `.tar.gz`
archive, read as a stream (`tarfile` mode `r|gz`: nothing is extracted to disk, and only the
current member is open). `chunks_of` then cuts a document into chunks of bytes (a whole
JSON file, or blocks of NDJSON lines) for parsing; `parse` turns a value that is not JSON into a
`ParseFailure`, so the importer can report it and carry on.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from carebase.fhir import json_io

#: File name endings read as one JSON value, and as one JSON value per line.
JSON_SUFFIXES = (".json",)
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CHUNK_LINES = 2000  # NDJSON lines per chunk handed to a worker


class UnreadablePath(ValueError):
    """A path named on the command line that does not exist or is of no kind we read."""


@dataclass(frozen=True, slots=True)
class Document:
    """One JSON or NDJSON file to import (a file, or a member of an archive).

    `source` names it for reports (`archive.tar.gz!fhir/x.json`); `key` identifies this
    content for checkpoints (path, size and modification time of the file on disk, plus the
    member name); `stream` reads its decompressed bytes.
    """

    source: str
    key: str
    ndjson: bool
    stream: IO[bytes]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Raw bytes of a document, or of NDJSON lines of it starting at `first_line`; `last`
    marks the document's final chunk (its key then goes to the checkpoint)."""

    source: str
    key: str
    data: bytes
    ndjson: bool
    first_line: int = 1
    last: bool = True
    error: str | None = None  # why the document could not be read to its end


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A line or file that is not valid JSON, and why."""

    message: str


def kind_of(name: str) -> str | None:
    """'json', 'ndjson', 'archive' or None (not an input), from a file name."""
    lower = name.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "archive"
    if lower.endswith(".gz"):
        lower = lower[:-3]
    if lower.endswith(JSON_SUFFIXES):
        return "json"
    if lower.endswith(NDJSON_SUFFIXES):
        return "ndjson"
    return None


def input_files(paths: list[str]) -> list[Path]:
    """The files to read: each path, or each input file under a directory (sorted, so two
    runs see the same order). Raises UnreadablePath for a missing path or a named file of
    a kind we do not read."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file() and kind_of(p.name)]
            files.extend(found)
        elif path.is_file():
            if kind_of(path.name) is None:
                raise UnreadablePath(
                    f"{name}: not a file we import (expected .json, .ndjson, .jsonl, their .gz,"
                    " .tar.gz/.tgz/.tar archives or a directory)"
                )
            files.append(path)
        else:
            raise UnreadablePath(f"{name}: no such file or directory")
    return files


def file_key(path: Path) -> str:
    """The checkpoint key of a file: its resolved path, size and modification time."""
    info = path.stat()
    return f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}"


def iter_documents(path: Path, skip: frozenset[str] = frozenset()) -> Iterator[Document]:
    """The documents of one input file (one, or one per archive member), streamed; those
    whose key is in `skip` are passed over without being decompressed."""
    key = file_key(path)
    kind = kind_of(path.name)
    if kind == "archive":
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                member_kind = kind_of(member.name)
                if not member.isfile() or member_kind not in ("json", "ndjson"):
                    continue
                member_key = f"{key}!{member.name}"
                if member_key in skip:
                    continue
                raw = archive.extractfile(member)
                if raw is None:
                    continue
                member_stream = _gunzipped(raw) if member.name.endswith(".gz") else raw
                yield Document(
                    f"{path}!{member.name}", member_key, member_kind == "ndjson", member_stream
                )
        return
    if key in skip:
        return
    with open(path, "rb") as raw_file:
        stream = _gunzipped(raw_file) if path.name.endswith(".gz") else raw_file
        yield Document(str(path), key, kind == "ndjson", stream)


def _gunzipped(raw: IO[bytes]) -> IO[bytes]:
    return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]  # a binary IO all the same


def chunks_of(document: Document, lines: int = CHUNK_LINES) -> Iterator[Chunk]:
    """A document's bytes in chunks: a JSON file whole, NDJSON `lines` lines at a time.
    A file that cannot be read to its end (a truncated gzip) ends with a chunk whose bytes
    are not JSON, so the reason is reported."""
    try:
        if not document.ndjson:
            yield Chunk(document.source, document.key, document.stream.read(), False)
            return
        block: list[bytes] = []
        first = 1
        for number, line in enumerate(document.stream, start=1):
            block.append(line.rstrip(b"\r\n"))
            if len(block) >= lines:
                yield Chunk(document.source, document.key, b"\n".join(block), True, first, False)
                block, first = [], number + 1
        yield Chunk(document.source, document.key, b"\n".join(block), True, first)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        yield Chunk(document.source, document.key, b"", False, error=f"cannot read the file: {exc}")


def parse(data: bytes) -> object:
    """The JSON value of `data`, or a ParseFailure saying why it is not JSON."""
    try:
        return json_io.loads(data)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return ParseFailure(f"not valid JSON: {exc}")
