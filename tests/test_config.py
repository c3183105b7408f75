"""Settings helpers: how many CPUs the process may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from carebase import config
from carebase.config import default_import_workers, usable_cpus


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Affinity to four CPUs; the cgroup quota file (not written yet) in tmp_path."""
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", cpu_max)
    return cpu_max


@pytest.mark.parametrize(
    ("quota", "cpus"),
    [
        (None, 4),  # no cgroup v2 quota file: the affinity decides
        ("max 100000\n", 4),  # no quota
        ("100000 100000\n", 1),  # one CPU's worth (docker --cpus=1)
        ("150000 100000\n", 2),  # 1.5 CPUs: a second one is used in part
        ("800000 100000\n", 4),  # a quota above the affinity does not add CPUs
        ("garbage\n", 4),  # unreadable: ignored
        ("5000 0\n", 4),  # a zero period: ignored
    ],
)
def test_usable_cpus_are_the_affinity_capped_by_the_cgroup_quota(
    four_cpus: Path, quota: str | None, cpus: int
) -> None:
    if quota is not None:
        four_cpus.write_text(quota)
    assert usable_cpus() == cpus


def test_usable_cpus_without_affinity_fall_back_to_the_cpu_count(
    four_cpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(config.os, "sched_getaffinity")
    monkeypatch.setattr(config.os, "cpu_count", lambda: None)
    assert usable_cpus() == 1


def test_import_workers_follow_the_usable_cpus(four_cpus: Path) -> None:
    assert default_import_workers() == 4
    four_cpus.write_text("100000 100000\n")
    assert default_import_workers() == 0  # one CPU: the job's thread alone
