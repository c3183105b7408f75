"""What a model card says about one registered model, read from its registry record: the
metrics `ml.training` recorded (held-out figures with bootstrap intervals, cross-validation,
calibration points, subgroups, permutation importance) and the task's definition."""

from __future__ import annotations

import math
from typing import Any

from carebase.ml.model_card import CardData, MetricRow, SubgroupRow, created_text
from carebase.ml.registry import ModelRecord
from carebase.ml.tasks import Task, load_task

#: Held-out metrics shown per task kind, in order (others stay in the registry's JSON).
SHOWN = {
    "classification": (
        "auroc",
        "auprc",
        "brier",
        "calibration_slope",
        "calibration_intercept",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "prevalence",
    ),
    "regression": ("r2", "mae", "rmse"),
}
#: Subgroup metrics compared across groups.
SUBGROUP_METRICS = {
    "classification": ("auroc", "brier", "sensitivity"),
    "regression": ("mae", "r2"),
}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def metric_rows(kind: str, metrics: dict[str, Any]) -> list[MetricRow]:
    """Held-out figures with their 95% intervals, then the cross-validation means."""
    held = metrics.get("held_out", {})
    values, intervals = held.get("metrics", {}), held.get("intervals", {})
    rows = []
    for name in SHOWN[kind]:
        if name not in values:
            continue
        low, high = (intervals.get(name) or (None, None))[:2]
        if low is not None and (math.isnan(_number(low)) or math.isnan(_number(high))):
            low = high = None
        rows.append(MetricRow(name, _number(values[name]), low, high, "held-out"))
    cv = metrics.get("cv", {})
    for name in SHOWN[kind][:3]:
        if name in cv.get("mean", {}):
            rows.append(
                MetricRow(
                    name,
                    _number(cv["mean"][name]),
                    split=f"{cv.get('folds', '')}"
                    f"-fold CV mean (sd {_number(cv['std'].get(name)):.3f})",
                )
            )
    return rows


def subgroup_rows(kind: str, metrics: dict[str, Any]) -> list[SubgroupRow]:
    """Each subgroup's figures (sex, age band) for the compared metrics."""
    rows = []
    for attribute, found in metrics.get("held_out", {}).get("subgroups", {}).items():
        for group, figures in found.get("by_group", {}).items():
            n = int(_number(figures.get("count", 0)) or 0)
            for metric in SUBGROUP_METRICS[kind]:
                if metric in figures:
                    rows.append(SubgroupRow(attribute, group, n, metric, _number(figures[metric])))
    return rows


def describe_data(task: Task, metrics: dict[str, Any]) -> str:
    """The data paragraph: cohort, index, label, features, sizes, missing values, split."""
    features = ", ".join(task.feature_names())
    cohort = []
    if task.min_age is not None:
        cohort.append(f"aged {task.min_age:g}+")
    if task.require_encounter_days:
        cohort.append(f"seen in the {task.require_encounter_days} days before the index time")
    return (
        f"Patients of the training database{' ' + ', '.join(cohort) if cohort else ''}; "
        f"index time: {task.index.type}; label: {task.label.type}. "
        f"{metrics.get('n_rows', '?')} rows from {metrics.get('n_patients', '?')} patients, "
        f"split by patient into {metrics.get('n_train', '?')} training and "
        f"{metrics.get('n_test', '?')} held-out rows. Features: {features}. Missing numbers are "
        "imputed with the training median plus a missing-indicator column; categories are "
        "one-hot encoded."
        + (f" Classes weighted: {metrics['class_weight']}." if metrics.get("class_weight") else "")
    )


def card_data(record: ModelRecord, task: Task | None = None) -> CardData:
    """The card of a registered model (its task loaded by name unless given)."""
    spec = task or load_task(record.task)
    metrics = record.metrics
    held = metrics.get("held_out", {})
    kind = spec.kind
    roc = None
    if held.get("roc"):
        roc = ([_number(p["fpr"]) for p in held["roc"]], [_number(p["tpr"]) for p in held["roc"]])
    residuals = None
    if held.get("residuals"):
        points = held["residuals"]
        residuals = ([_number(p["predicted"]) for p in points],
                     [_number(p["residual"]) for p in points])  # fmt: skip
    output = (
        "a probability between 0 and 1 of the outcome"
        if kind == "classification"
        else "a predicted value of the outcome"
    )
    limitations = [
        "Trained and evaluated on the records of one database; performance elsewhere is "
        "unknown until validated there (no external validation is recorded here).",
        "Features come only from coded FHIR data (conditions, observations, medications, "
        "encounters); what is not coded is invisible to the model.",
        "Subgroups are limited to sex and age band; small groups have wide uncertainty.",
    ]
    if roc is None and kind == "classification":
        limitations.append("ROC points were not recorded at training; the ROC plot is absent.")
    return CardData(
        model_id=record.id,
        version=record.version,
        task=record.task,
        kind=kind,
        model_type=record.model_type,
        status=record.status,
        created=created_text(record.created),
        code_version=record.code_version,
        sha256=record.sha256,
        data_fingerprint=record.data_fingerprint,
        description=spec.description,
        intended_use=(
            f"Decision support for clinicians: the model gives {output} for one patient from "
            "their current record (FHIR $predict, CDS Hooks patient-view), with the factors "
            "that moved it. It does not diagnose, and is not for use without clinical review."
        ),
        data=describe_data(spec, metrics),
        limitations=limitations,
        metrics=metric_rows(kind, metrics),
        calibration=[
            (_number(p["predicted"]), _number(p["observed"])) for p in held.get("calibration", [])
        ],
        roc=roc,
        residuals=residuals,
        subgroups=subgroup_rows(kind, metrics),
        features=[(str(n), _number(v)) for n, v in metrics.get("global_importance", [])][:10],
    )
