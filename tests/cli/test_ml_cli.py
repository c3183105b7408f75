"""`carebase ml` end to end as real subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from test_migrate import assert_one_line_error, run_cli

from carebase.ml import registry
from carebase.store.base import Store
from ml_serving_data import TASK, load_patients, trained_model


def test_tasks_lists_the_shipped_tasks() -> None:
    proc = run_cli("ml", "tasks")
    assert proc.returncode == 0, proc.stderr
    for name in ("t2d_onset_3y", "readmission_30d", "next_hba1c"):
        assert name in proc.stdout


def test_models_promote_evaluate_card(store: Store, tmp_path: Path) -> None:
    first = registry.register(store, trained_model())
    second = registry.register(store, trained_model())
    url = store.url
    listed = run_cli("ml", "models", "--database", url)
    assert listed.returncode == 0, listed.stderr
    assert first.id in listed.stdout and "candidate" in listed.stdout
    promoted = run_cli("ml", "promote", first.id, "--database", url)
    assert promoted.returncode == 0 and f"{first.id} is active" in promoted.stdout
    again = run_cli("ml", "promote", second.id, "--database", url)
    assert f"{first.id} retired" in again.stdout
    assert registry.get(store, first.id).status == "retired"
    evaluated = run_cli("ml", "evaluate", second.id, "--database", url)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "auroc" in evaluated.stdout and "held-out" in evaluated.stdout
    assert "Largest subgroup gap" in evaluated.stdout
    card = run_cli("ml", "card", second.id, "--out", str(tmp_path / "card"), "--database", url)
    assert card.returncode == 0, card.stderr
    names = sorted(p.name for p in (tmp_path / "card").iterdir())
    assert names == ["calibration.png", "card.html", "card.md", "roc.png"]
    assert second.id in (tmp_path / "card" / "card.md").read_text()
    retired = run_cli("ml", "retire", second.id, "--database", url)
    assert retired.returncode == 0 and registry.active(store, TASK) is None
    assert_one_line_error(run_cli("ml", "promote", "nope-v1", "--database", url), "nope-v1")


def test_train_reads_the_database_and_registers(tmp_path: Path) -> None:
    # SQLite only: loading and training take most of a minute; the registry steps the
    # other tests run on both databases are the same code
    from carebase.store.factory import open_store

    url = f"sqlite:///{tmp_path / 'train.db'}"
    store = open_store(url)
    store.migrate()
    load_patients(store, 250)
    store.close()
    proc = run_cli("ml", "train", TASK, "--model", "logistic", "--promote", "--database", url,
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"Registered {TASK}-v1 (active)" in proc.stdout
    assert_one_line_error(
        run_cli("ml", "train", TASK, "--model", "forest", "--database", url), "--model"
    )
    assert_one_line_error(run_cli("ml", "train", "no_such_task", "--database", url), "no_such")


def test_baselines_json() -> None:
    proc = run_cli("ml", "baselines", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), dict)
