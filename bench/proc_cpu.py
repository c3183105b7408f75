"""CPU seconds a piece of work cost, from /proc (Linux): a process with its reaped children,
and the PostgreSQL backends serving one database.

On a machine shared with other jobs the wall-clock rate of a run says as much about the
neighbours as about the code; the CPU time it cost does not depend on them (much), so the
benchmarks report both.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system seconds of process `pid` and of the children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def tree_cpu(pid: int) -> float:
    """`process_cpu` of `pid` and of every live descendant (a server, its forkserver, and
    the writers forked from it, whose time the forkserver collects when they end)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            total += process_cpu(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:  # ended meanwhile (its time went to its parent)
            continue
    return total


class PostgresCpu:
    """Sums the CPU of the PostgreSQL backends connected to `database` while it runs (a
    backend's time is read every `every` seconds, as it exits with its connection; what a
    backend spent before `start` is not counted). Use as a context manager; `seconds`."""

    def __init__(self, database: str, every: float = 0.1) -> None:
        self._needle = f" {database} ".encode()
        self._every = every
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PostgresCpu:
        self._sample(self._start)
        self._last = dict(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self._last)

    @property
    def seconds(self) -> float:
        """CPU seconds of the database's backends between enter and exit."""
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample(self._last)

    def _sample(self, into: dict[int, float]) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                # "postgres: 15/main: user database host(port) state"
                if self._needle not in Path(entry.path, "cmdline").read_bytes():
                    continue
                into[int(entry.name)] = process_cpu(int(entry.name))
            except OSError:  # gone meanwhile
                continue
