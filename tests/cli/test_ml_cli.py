"""`carebase ml` end to end on SQLite and PostgreSQL: in-process through typer's CliRunner
(what each command prints and its exit code), and once as a real subprocess (the entry
point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from test_migrate import run_cli
from typer.testing import CliRunner

from carebase.cli.main import app
from carebase.ml import registry
from carebase.store.base import Store
from ml_serving_data import TASK, baseline_report, load_patients, trained_model


def cli(*args: str) -> Result:
    """`carebase ARGS` in this process; stdout and stderr apart."""
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Result, *words: str) -> None:
    """Exit 1, and stderr is a single `error: ...` line naming `words`, no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert err.startswith("error:") and "\n" not in err, err
    for word in words:
        assert word in err, err


def test_tasks_lists_the_shipped_tasks_as_a_subprocess() -> None:
    proc = run_cli("ml", "tasks")
    assert proc.returncode == 0, proc.stderr
    for name in ("t2d_onset_3y", "readmission_30d", "next_hba1c"):
        assert name in proc.stdout


def test_models_promote_evaluate_card(store: Store, tmp_path: Path) -> None:
    first = registry.register(store, trained_model())
    second = registry.register(store, trained_model())
    url = store.url
    listed = cli("ml", "models", "--database", url)
    assert listed.exit_code == 0, listed.stderr
    assert first.id in listed.stdout and "candidate" in listed.stdout
    promoted = cli("ml", "promote", first.id, "--database", url)
    assert promoted.exit_code == 0 and f"{first.id} is active" in promoted.stdout
    again = cli("ml", "promote", second.id, "--database", url)
    assert f"{first.id} retired" in again.stdout
    assert registry.get(store, first.id).status == "retired"
    evaluated = cli("ml", "evaluate", second.id, "--database", url)
    assert evaluated.exit_code == 0, evaluated.stderr
    assert "auroc" in evaluated.stdout and "held-out" in evaluated.stdout
    assert "Largest subgroup gap" in evaluated.stdout
    card = cli("ml", "card", second.id, "--out", str(tmp_path / "card"), "--database", url)
    assert card.exit_code == 0, card.stderr
    names = sorted(p.name for p in (tmp_path / "card").iterdir())
    assert names == ["calibration.png", "card.html", "card.md", "roc.png"]
    assert second.id in (tmp_path / "card" / "card.md").read_text()
    retired = cli("ml", "retire", second.id, "--database", url)
    assert retired.exit_code == 0 and registry.active(store, TASK) is None
    assert_one_line_error(cli("ml", "promote", "nope-v1", "--database", url), "nope-v1")


def test_train_reads_the_database_and_registers(tmp_path: Path) -> None:
    # SQLite only: the registry steps the other tests run on both databases are the same code
    from carebase.store.factory import open_store

    url = f"sqlite:///{tmp_path / 'train.db'}"
    store = open_store(url)
    store.migrate()
    load_patients(store, 80)  # ~100 rows, 24 readmitted: enough to train and evaluate
    store.close()
    result = cli("ml", "train", TASK, "--model", "logistic", "--promote", "--database", url)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert f"Registered {TASK}-v1 (active)" in result.stdout
    assert "auroc" in result.stdout
    assert_one_line_error(
        cli("ml", "train", TASK, "--model", "forest", "--database", url), "--model"
    )
    assert_one_line_error(cli("ml", "train", "no_such_task", "--database", url), "no_such")


def test_baselines_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real report, computed once per session (tests/ml/test_baselines.py checks its figures)
    report = baseline_report()
    monkeypatch.setattr("carebase.ml.baselines.run_baselines", lambda: report)
    result = cli("ml", "baselines", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads(result.stdout)
    assert {"breast_cancer", "diabetes", "pima"} <= set(data)
    assert data["breast_cancer"]["auroc"] == pytest.approx(
        baseline_report()["breast_cancer"]["auroc"]
    )
