"""`carebase ml tasks|train|evaluate|card|models|promote|retire|baselines`: train risk models
on the database's patients, register them, inspect and promote them, write model cards."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from carebase.cli.options import DatabaseOption, friendly_errors, opened_store
from carebase.errors import BadRequest
from carebase.store.base import Store

# carebase.ml is imported inside each command: scikit-learn, pandas and matplotlib take
# seconds to import, and every other `carebase` command would pay for them.

group = typer.Typer(help="Risk prediction: tasks, training, the model registry, model cards.")
# wide when piped: model ids and hashes must not be cut to fit 80 columns
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
MODEL_TYPES = ("logistic", "linear", "hgb")


def register(app: typer.Typer) -> None:
    """Add the `ml` command group to the app."""
    app.add_typer(group, name="ml", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )  # fmt: skip


@group.command("tasks")
def tasks() -> None:
    """List the prediction tasks carebase ships."""
    from carebase.ml.tasks import load_task, task_names

    table = Table("task", "kind", "description")
    with friendly_errors():
        for name in task_names():
            task = load_task(name)
            table.add_row(task.name, task.kind, task.description)
    out.print(table)


@group.command("train")
def train(
    task: Annotated[str, typer.Argument(help="A task name (`carebase ml tasks`) or file.")],
    model: Annotated[str, typer.Option(help="logistic, linear or hgb.")] = "logistic",
    seed: Annotated[int, typer.Option(help="Random seed (splits, bootstrap, model).")] = 0,
    promote: Annotated[bool, typer.Option(help="Make the new model the active one.")] = False,
    database: DatabaseOption = None,
) -> None:
    """Build the task's data set from the database's patients (exported once, features
    computed set-based in DuckDB), train, evaluate and register the model (a candidate
    unless --promote)."""
    from carebase.ml import registry
    from carebase.ml.features_batch import dataset_from_store_batch
    from carebase.ml.tasks import load_task
    from carebase.ml.training import train as fit

    with friendly_errors():
        if model not in MODEL_TYPES:
            raise BadRequest(f"--model {model!r}: use {', '.join(MODEL_TYPES)}", location="--model")
        spec = load_task(task)
    with opened_store(database) as store, friendly_errors(store.url):
        store.migrate()
        with _progress() as bar:
            step = bar.add_task(f"Reading patients for {spec.name}", total=3)
            dataset = dataset_from_store_batch(spec, store)
            bar.update(step, advance=1, description=f"Training {model} on {len(dataset.y)} rows")
            trained = fit(spec, dataset, model, seed=seed)  # type: ignore[arg-type]
            bar.update(step, advance=1, description="Registering")
            record = registry.register(store, trained)
            if promote:
                record, _ = registry.promote(store, record.id)
            bar.update(step, advance=1)
        out.print(f"Registered [bold]{record.id}[/bold] ({record.status}), {len(dataset.y)} rows")
        _print_metrics(store, record.id)


@group.command("evaluate")
def evaluate(
    model: Annotated[str, typer.Argument(help="A model id (`carebase ml models`).")],
    database: DatabaseOption = None,
) -> None:
    """Show a registered model's evaluation (computed at training: cross-validation and
    held-out figures with 95% intervals, subgroups)."""
    with opened_store(database) as store, friendly_errors(store.url):
        store.migrate()
        _print_metrics(store, model)


def _print_metrics(store: Store, model_id: str) -> None:
    from carebase.ml import registry
    from carebase.ml.model_card_data import card_data

    data = card_data(registry.get(store, model_id))
    table = Table("metric", "split", "value", "95% interval", title=f"{model_id} ({data.task})")
    for row in data.metrics:
        interval = "" if row.low is None else f"{row.low:.3f} - {row.high:.3f}"
        table.add_row(row.name, row.split, f"{row.value:.3f}", interval)
    out.print(table)
    gap = data.largest_gap()
    if gap is not None:
        out.print(f"Largest subgroup gap: {gap[2]:.3f} in {gap[1]} across {gap[0]} "
                  f"({gap[3]} lowest, {gap[4]} highest)")  # fmt: skip


@group.command("card")
def card(
    model: Annotated[str, typer.Argument(help="A model id.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder to write into (default: card-MODEL).")
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Write the model card (card.md, card.html, PNG plots) into a folder."""
    from carebase.ml import registry
    from carebase.ml.model_card import write_card
    from carebase.ml.model_card_data import card_data

    with opened_store(database) as store, friendly_errors(store.url):
        store.migrate()
        data = card_data(registry.get(store, model))
        folder = out_dir or Path(f"card-{model}")
        with _progress() as bar:
            bar.add_task(f"Drawing the card of {model}")
            files = write_card(data, folder)
    for path in files:
        out.print(str(path))


@group.command("models")
def models(
    task: Annotated[str | None, typer.Option(help="Only this task's models.")] = None,
    database: DatabaseOption = None,
) -> None:
    """List the registered models, newest version first per task."""
    from carebase.ml import registry
    from carebase.ml.model_card import created_text

    with opened_store(database) as store, friendly_errors(store.url):
        store.migrate()
        found = registry.list_models(store, task=task)
    table = Table("id", "task", "version", "type", "status", "created", "sha256")
    for r in found:
        table.add_row(r.id, r.task, str(r.version), r.model_type, r.status,
                      created_text(r.created), r.sha256[:12])  # fmt: skip
    out.print(table if found else "No models are registered; `carebase ml train TASK` makes one")


@group.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="A model id.")],
    database: DatabaseOption = None,
) -> None:
    """Make a model its task's active model (the previous active one retires)."""
    from carebase.ml import registry

    with opened_store(database) as store, friendly_errors(store.url):
        store.migrate()
        registry.load(store, model)  # refuse to activate an artifact that does not verify
        record, retired = registry.promote(store, model)
    out.print(
        f"{record.id} is active for {record.task}" + (f"; {retired} retired" if retired else "")
    )


@group.command("retire")
def retire(
    model: Annotated[str, typer.Argument(help="A model id.")],
    database: DatabaseOption = None,
) -> None:
    """Take a model out of service (it stays registered and can be promoted again)."""
    from carebase.ml import registry

    with opened_store(database) as store, friendly_errors(store.url):
        store.migrate()
        record = registry.retire(store, model)
    out.print(f"{record.id} is retired")


@group.command("baselines")
def baselines(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Train and evaluate on the public reference data sets (through FHIR) and report."""
    from carebase.ml.baselines import run_baselines

    with _progress() as bar:
        bar.add_task("Running the baselines")
        with friendly_errors():
            report: dict[str, Any] = run_baselines()
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        return
    out.print_json(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY).decode())
