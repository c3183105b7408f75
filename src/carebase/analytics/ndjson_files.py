"""Streams FHIR resources from NDJSON files (`.ndjson`, `.ndjson.gz`, `.json` lines)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

import orjson

from carebase.errors import BadRequest

#: file name endings a view runner reads as one JSON resource per line
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".json", ".json.gz", ".jsonl", ".jsonl.gz")


def _open(path: Path) -> BinaryIO:
    if not path.is_file():
        raise BadRequest(f"{path}: no such NDJSON file", location=str(path))
    if not path.name.endswith(NDJSON_SUFFIXES):
        raise BadRequest(
            f"{path}: not an NDJSON file; expected a name ending in {', '.join(NDJSON_SUFFIXES)}",
            location=str(path),
        )
    if path.name.endswith(".gz"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def check_files(paths: Sequence[Path]) -> list[Path]:
    """`paths` as Paths after checking each is a readable NDJSON file (BadRequest otherwise)."""
    checked = [Path(p) for p in paths]
    for path in checked:
        _open(path).close()
    return checked


def iter_resources(paths: Sequence[Path]) -> Iterator[dict[str, object]]:
    """Each JSON object of each file in order; blank lines are skipped.

    A line that is not a JSON object raises BadRequest naming the file and line number.
    """
    for path in check_files(paths):
        with _open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    resource = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BadRequest(
                        f"{path}:{number}: not valid JSON ({exc}); "
                        "each line must hold one resource",
                        location=f"{path}:{number}",
                    ) from None
                if not isinstance(resource, dict):
                    raise BadRequest(
                        f"{path}:{number}: a line holds {type(resource).__name__}, "
                        "not a JSON object (resource)",
                        location=f"{path}:{number}",
                    )
                yield resource
