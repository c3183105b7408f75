"""Model evaluation: patient-level splits, discrimination and calibration metrics, decision
curves, patient-cluster bootstrap intervals and subgroup metrics (fairlearn)."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    r2_score,
    roc_curve,
    root_mean_squared_error,
)
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from carebase.errors import Unprocessable

Split = tuple[np.ndarray, np.ndarray]
EPS = 1e-6
AGE_BANDS = (0, 40, 65, 200)


def cv_splits(
    kind: str, y: np.ndarray, groups: Sequence[str], folds: int, seed: int
) -> list[Split]:
    """`folds` patient-level folds (no patient on both sides), stratified by the label for
    classification. Unprocessable when there are too few patients or positives."""
    groups_arr = np.asarray(groups)
    if len(set(groups_arr)) < folds:
        raise Unprocessable(f"{len(set(groups_arr))} patients cannot make {folds} folds")
    if kind == "classification":
        counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
        if counts.min() < folds:
            raise Unprocessable(
                f"{counts.min()} rows of the rarer class cannot be spread over {folds} folds; "
                "use more patients or fewer folds",
                location="dataset.y",
            )
        splitter: Any = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups_arr)]


def holdout_split(
    kind: str, y: np.ndarray, groups: Sequence[str], test_fraction: float = 0.2, seed: int = 0
) -> Split:
    """(train rows, test rows): one fold of a patient-level (stratified) split."""
    return cv_splits(kind, y, groups, round(1 / test_fraction), seed)[0]


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return np.asarray(np.log(q / (1 - q)))


def _newton_logistic(y: np.ndarray, design: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Maximum-likelihood coefficients of logit P(y) = offset + design @ beta (IRLS); small
    and unpenalised, so a few numpy steps instead of a general solver."""
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        q = 1 / (1 + np.exp(-(offset + design @ beta)))
        w = np.maximum(q * (1 - q), EPS)
        hessian = design.T @ (design * w[:, None])
        step = np.linalg.lstsq(hessian, design.T @ (y - q), rcond=None)[0]
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10 or np.max(np.abs(beta)) > 1e3:  # separable: diverges
            break
    return beta


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration slope (logistic regression of y on logit p) and calibration-in-the-large
    intercept (the intercept with the slope fixed at 1, the logit as offset); 1 and 0 are
    perfect. NaN when y holds one class only."""
    y = np.asarray(y, dtype=float)
    if len(set(y.tolist())) < 2:
        return math.nan, math.nan
    z = _logit(p)
    ones = np.ones((len(y), 1))
    slope = float(_newton_logistic(y, np.column_stack([ones, z]), np.zeros(len(y)))[1])
    intercept = float(_newton_logistic(y, ones, z)[0])
    return slope, intercept


def calibration_points(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Calibration curve: mean predicted vs observed rate in quantile bins."""
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    return [
        {"predicted": float(a), "observed": float(b)}
        for a, b in zip(predicted, observed, strict=True)
    ]


def decision_curve(
    y: np.ndarray, p: np.ndarray, thresholds: Sequence[float] | None = None
) -> list[dict[str, float]]:
    """Net benefit of treating those with p >= t, of treating all, per threshold t (Vickers &
    Elkin 2006): TP/n - FP/n * t/(1-t)."""
    ts = (
        thresholds if thresholds is not None else [round(t, 2) for t in np.arange(0.05, 0.96, 0.05)]
    )
    n, prevalence = len(y), float(np.mean(y))
    out = []
    for t in ts:
        treat = p >= t
        tp = float(np.sum(treat & (y == 1)))
        fp = float(np.sum(treat & (y == 0)))
        odds = t / (1 - t)
        out.append(
            {
                "threshold": float(t),
                "net_benefit": tp / n - fp / n * odds,
                "treat_all": prevalence - (1 - prevalence) * odds,
            }
        )
    return out


def _safe(fn: Callable[[], float]) -> float:
    # a bootstrap sample or subgroup may hold one class only: the metric is then undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            return float(fn())
        except ValueError:
            return math.nan


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half), the same
    number as sklearn's roc_auc_score without its per-call overhead (bootstraps call it often)."""
    y = np.asarray(y, dtype=int)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def classification_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """AUROC, AUPRC, Brier, calibration slope/intercept, and at `threshold`: sensitivity,
    specificity, PPV, NPV and the number of errors."""
    y = np.asarray(y, dtype=int)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    slope, intercept = calibration_slope_intercept(y, p)
    ratio = lambda a, b: a / b if b else math.nan  # noqa: E731
    return {
        "n": float(len(y)),
        "prevalence": float(np.mean(y)) if len(y) else math.nan,
        "auroc": auroc(y, p),
        "auprc": _safe(lambda: average_precision_score(y, p)) if tp + fn else math.nan,
        "brier": float(brier_score_loss(y, p)),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "threshold": threshold,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "errors": float(fp + fn),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R², MAE and RMSE."""
    return {
        "n": float(len(y)),
        "r2": _safe(lambda: r2_score(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(root_mean_squared_error(y, pred)),
    }


def metrics_for(kind: str, y: np.ndarray, pred: np.ndarray, threshold: float) -> dict[str, float]:
    """The metrics of the task kind."""
    if kind == "classification":
        return classification_metrics(y, pred, threshold)
    return regression_metrics(y, pred)


BOOTSTRAP_KEYS = {
    "classification": (
        "auroc",
        "auprc",
        "brier",
        "calibration_slope",
        "sensitivity",
        "specificity",
    ),
    "regression": ("r2", "mae", "rmse"),
}


def bootstrap_intervals(
    kind: str,
    y: np.ndarray,
    pred: np.ndarray,
    groups: Sequence[str],
    threshold: float = 0.5,
    rounds: int = 200,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals from resampling patients (all rows of a drawn patient go in
    together, so repeated index times of one patient do not narrow the interval)."""
    rng = np.random.default_rng(seed)
    groups_arr = np.asarray(groups)
    patients = np.unique(groups_arr)
    rows_of = {g: np.flatnonzero(groups_arr == g) for g in patients}
    draws: dict[str, list[float]] = {k: [] for k in BOOTSTRAP_KEYS[kind]}
    for _ in range(rounds):
        chosen = rng.choice(patients, size=len(patients), replace=True)
        rows = np.concatenate([rows_of[g] for g in chosen])
        m = metrics_for(kind, y[rows], pred[rows], threshold)
        for k in draws:
            if not math.isnan(m[k]):
                draws[k].append(m[k])
    return {
        k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        if v
        else (math.nan, math.nan)
        for k, v in draws.items()
    }


def age_band(age: float) -> str:
    """'18-39', '40-64', '65+' style band of an age (missing: 'unknown')."""
    if age is None or math.isnan(age):
        return "unknown"
    for low, high in itertools.pairwise(AGE_BANDS):
        if low <= age < high:
            return f"{low}-{high - 1}" if high < 200 else f"{low}+"
    return "unknown"


def subgroup_metrics(
    kind: str, y: np.ndarray, pred: np.ndarray, X: pd.DataFrame, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics by sex and by age band (fairlearn MetricFrame), with the largest gap between
    groups per metric. Groups with one class only get NaN discrimination metrics."""
    features: dict[str, Any] = {}
    if "sex" in X:
        features["sex"] = X["sex"].astype(str).to_numpy()
    if "age" in X:
        features["age_band"] = np.array([age_band(a) for a in X["age"].to_numpy(dtype=float)])
    if kind == "classification":
        fns: dict[str, Callable[..., float]] = {
            "auroc": lambda t, s: auroc(t, s),
            "brier": lambda t, s: float(brier_score_loss(t, s)),
            "sensitivity": lambda t, s: _safe(
                lambda: classification_metrics(t, s, threshold)["sensitivity"]
            ),
            "observed_rate": lambda t, s: float(np.mean(t)),
            "mean_predicted": lambda t, s: float(np.mean(s)),
        }
    else:
        fns = {
            "mae": lambda t, s: float(mean_absolute_error(t, s)),
            "r2": lambda t, s: _safe(lambda: r2_score(t, s)),
        }
    fns["count"] = lambda t, s: float(len(t))
    out: dict[str, Any] = {}
    for name, values in features.items():
        frame = MetricFrame(metrics=fns, y_true=y, y_pred=pred, sensitive_features=values)
        by_group = {
            str(g): {k: float(v) for k, v in row.items()} for g, row in frame.by_group.iterrows()
        }
        gaps = frame.difference(method="between_groups")
        out[name] = {
            "by_group": by_group,
            "largest_gap": {k: float(v) for k, v in gaps.items() if k != "count"},
        }
    return out


def cross_validate(
    kind: str,
    pipeline: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    groups: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Patient-level k-fold CV: each fold's metrics (a clone of `pipeline` fitted on the other
    folds only), their mean and standard deviation."""
    per_fold: list[dict[str, float]] = []
    for train, test in cv_splits(kind, y, groups, folds, seed):
        model = clone(pipeline).fit(X.iloc[train], y[train])
        pred = predict_values(kind, model, X.iloc[test])
        per_fold.append(metrics_for(kind, y[test], pred, threshold))
    keys = per_fold[0].keys()
    return {
        "folds": folds,
        "per_fold": per_fold,
        "mean": {k: float(np.nanmean([f[k] for f in per_fold])) for k in keys},
        "std": {k: float(np.nanstd([f[k] for f in per_fold])) for k in keys},
    }


def predict_values(kind: str, model: Any, X: pd.DataFrame) -> np.ndarray:
    """Probability of the positive class, or the predicted value."""
    if kind == "classification":
        return np.asarray(model.predict_proba(X)[:, 1], dtype=float)
    return np.asarray(model.predict(X), dtype=float)


def evaluate_holdout(
    kind: str,
    y: np.ndarray,
    pred: np.ndarray,
    X: pd.DataFrame,
    groups: Sequence[str],
    threshold: float = 0.5,
    seed: int = 0,
    rounds: int = 200,
) -> dict[str, Any]:
    """Everything about held-out predictions: metrics, 95 % intervals, subgroups, and for
    classifiers calibration points and the decision curve."""
    out: dict[str, Any] = {
        "metrics": metrics_for(kind, y, pred, threshold),
        "intervals": bootstrap_intervals(kind, y, pred, groups, threshold, rounds, seed),
        "subgroups": subgroup_metrics(kind, y, pred, X, threshold),
    }
    if kind == "classification":
        out["calibration"] = calibration_points(y, pred)
        out["decision_curve"] = decision_curve(y, pred)
        out["roc"] = roc_points(y, pred)
    else:
        out["residuals"] = residual_points(y, pred)
    return out


#: Points kept of a curve or scatter for the model card's plots (the JSON stays small).
PLOT_POINTS = 200


def roc_points(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """The held-out ROC curve (for the model card), thinned to about PLOT_POINTS points."""
    if len(np.unique(y)) < 2:
        return []
    fpr, tpr, _ = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), PLOT_POINTS)).astype(int))
    return [{"fpr": float(fpr[i]), "tpr": float(tpr[i])} for i in keep]


def residual_points(y: np.ndarray, pred: np.ndarray) -> list[dict[str, float]]:
    """Up to PLOT_POINTS held-out (predicted, observed - predicted) pairs (model card)."""
    keep = np.unique(np.linspace(0, len(y) - 1, min(len(y), PLOT_POINTS)).astype(int))
    return [{"predicted": float(pred[i]), "residual": float(y[i] - pred[i])} for i in keep]
