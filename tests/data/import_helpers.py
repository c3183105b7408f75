"""Small builders of import inputs shared by the importer tests."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import orjson

from carebase.data.importer import Importer
from carebase.data.loader import LoadSummary, Rejected
from carebase.store.base import Store

Json = dict[str, Any]


def patient(id_: str, family: str = "Ng") -> Json:
    return {"resourceType": "Patient", "id": id_, "name": [{"family": family}]}


def write_ndjson(path: Path, lines: list[object | str]) -> Path:
    """Lines given as str are written verbatim (to make malformed ones)."""
    text = "\n".join(x if isinstance(x, str) else orjson.dumps(x).decode() for x in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_json(path: Path, value: object) -> Path:
    path.write_bytes(orjson.dumps(value))
    return path


def write_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def transaction(entries: list[Json], kind: str = "transaction") -> Json:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(uuid: str, resource: Json, **request: str) -> Json:
    return {
        "fullUrl": f"urn:uuid:{uuid}",
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }


def run(
    store: Store, paths: list[Path], **options: Any
) -> tuple[LoadSummary, list[Rejected], Importer]:
    rejected: list[Rejected] = []
    importer = Importer(store, on_rejected=rejected.append, **options)
    summary = importer.run(paths)
    return summary, rejected, importer


def adds_up(summary: LoadSummary) -> bool:
    return summary.read == (
        summary.created + summary.updated + summary.unchanged + summary.rejected
    )
