"""Checkpoints of an import, so an interrupted run resumes where it stopped.

The checkpoint file (next to the report) names the database and then, one per line, the key
of each input document whose resources are all committed (`sources.file_key` plus the archive
member). A line is appended and fsynced as soon as the loader commits the batch that
finishes a document, so a killed run loses at most the documents in flight; those are read
again, which is harmless because loading is idempotent. A run that finishes deletes the
file: the next run of the same inputs reads everything again (and finds it unchanged).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

_HEADER = "carebase import checkpoint v1 "


class Checkpoint:
    """The documents an unfinished import of `database` already committed."""

    def __init__(self, path: Path, database: str) -> None:
        self.path = path
        self._database = database
        self._file: IO[str] | None = None
        self.done: frozenset[str] = frozenset()

    def load(self) -> frozenset[str]:
        """Keys committed by an unfinished earlier run into the same database (else none)."""
        if not self.path.is_file():
            return frozenset()
        lines = self.path.read_text(encoding="utf-8").split("\n")
        if lines[0] != _HEADER + self._database:
            return frozenset()
        # The last line may be cut short by a kill; a cut key matches no document.
        self.done = frozenset(line for line in lines[1:] if line)
        return self.done

    def start(self, resume: bool) -> None:
        """Open the file for appending (starting a new one unless resuming)."""
        if resume and self.done:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            return
        self.done = frozenset()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self._file.write(_HEADER + self._database + "\n")
        self._sync()

    def mark(self, keys: list[str]) -> None:
        """Record that every resource of the documents `keys` is committed."""
        if not keys or self._file is None:
            return
        self._file.write("".join(key + "\n" for key in keys))
        self._sync()

    def finish(self) -> None:
        """The import completed: forget the checkpoint."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the file, keeping it (an interrupted run)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
