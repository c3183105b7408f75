"""Where the team's shared data and conformance suites are (importable by any test module;
`conftest` modules are not, since pytest loads several under that one name)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    """The team's shared folder: $CAREBASE_SHARED_DIR, else `../shared` beside this checkout,
    else beside the repository this clone came from (CI tests a fresh clone elsewhere)."""
    candidates = []
    if os.environ.get("CAREBASE_SHARED_DIR"):
        candidates.append(Path(os.environ["CAREBASE_SHARED_DIR"]))
    candidates.append(REPO.parent / "shared")
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and "://" not in origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / "shared")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED = _shared_dir()
SYNTHEA_TAR = SHARED / "data" / "synthea-r4-100.tar.gz"
