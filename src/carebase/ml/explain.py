"""Per-prediction explanations as additive contributions of the original features, on the
model's raw scale (log-odds for classifiers, the target's units for regression).

- Linear models: exact, coef x (preprocessed value - training mean of that column), summed
  over the columns one feature became (value, missing-indicator, one-hot levels). They add up
  to raw(x) - raw(reference).
- Gradient boosting: shap's TreeExplainer when the optional `ml-shap` extra is installed
  (contributions add up to raw(x) - the model's mean raw output). Without shap: Shapley values
  estimated by sampling feature orderings (Strumbelj & Kononenko 2014) against the same
  reference row as linear models, features moved as groups of their preprocessed columns;
  every ordering telescopes, so the contributions add up exactly to raw(x) - raw(reference)
  and only the split between features is an estimate.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from carebase.errors import BadRequest
from carebase.ml.evaluation import predict_values
from carebase.ml.row_transform import row_transform

SAMPLED_ORDERINGS = 64


@dataclass(frozen=True)
class Contribution:
    """How much one feature moved this prediction away from the reference."""

    feature: str
    value: object
    contribution: float


def column_groups(trained: Any, names: list[str] | None = None) -> dict[str, list[int]]:
    """Original feature -> indexes of the preprocessed columns made from it (`names`: the
    preprocessed column names, when the caller has them already)."""
    if names is None:
        preprocess = trained.pipeline.named_steps["preprocess"]
        names = [str(n) for n in preprocess.get_feature_names_out()]
    categorical = set(trained.task.categorical_features())
    groups: dict[str, list[int]] = {f: [] for f in trained.feature_names}
    for i, name in enumerate(names):
        if name in groups and name not in categorical:
            groups[name].append(i)
        elif name.startswith("missingindicator_") and name[17:] in groups:
            groups[name[17:]].append(i)
        else:
            owner = next((c for c in categorical if name.startswith(f"{c}_")), None)
            if owner is None:
                raise ValueError(f"preprocessed column {name!r} maps to no feature")
            groups[owner].append(i)
    return groups


def _raw(model: Any, Z: np.ndarray) -> np.ndarray:
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(Z), dtype=float).reshape(len(Z))
    return np.asarray(model.predict(Z), dtype=float).reshape(len(Z))


def _linear(model: Any, z: np.ndarray, ref: np.ndarray) -> np.ndarray:
    coef = np.asarray(model.coef_, dtype=float).reshape(-1)
    return np.asarray(coef * (z - ref))


def _shap(model: Any, z: np.ndarray) -> np.ndarray:
    import shap  # the optional extra `ml-shap`

    values = shap.TreeExplainer(model).shap_values(z.reshape(1, -1))
    return np.asarray(values, dtype=float).reshape(-1)


def sampled_shapley(
    model: Any,
    z: np.ndarray,
    ref: np.ndarray,
    groups: list[list[int]],
    seed: int = 0,
    orderings: int = SAMPLED_ORDERINGS,
) -> np.ndarray:
    """Shapley values of `groups` of columns for raw(z) against raw(ref), by averaging each
    group's marginal effect over random orderings (all of them when there are few groups)."""
    rng = np.random.default_rng(seed)
    k = len(groups)
    rows = []
    perms = [rng.permutation(k) for _ in range(orderings)]
    for perm in perms:
        current = ref.copy()
        rows.append(current.copy())
        for g in perm:
            current[groups[g]] = z[groups[g]]
            rows.append(current.copy())
    raw = _raw(model, np.vstack(rows)).reshape(orderings, k + 1)
    phi = np.zeros(k)
    for p, perm in enumerate(perms):
        steps = np.diff(raw[p])
        phi[perm] += steps
    return phi / orderings


def explain(
    trained: Any, X_row: pd.DataFrame, method: Literal["auto", "shap", "sampling"] = "auto"
) -> list[Contribution]:
    """Contributions of each original feature to the prediction for the one row `X_row`,
    sorted by |contribution| (largest first). `method` matters for gradient boosting only."""
    return predict_and_explain(trained, X_row, method)[1]


def predict_and_explain(
    trained: Any, X_row: pd.DataFrame, method: Literal["auto", "shap", "sampling"] = "auto"
) -> tuple[float, list[Contribution]]:
    """The prediction for the one row `X_row` (as `TrainedModel.predict` gives it) and its
    contributions (as `explain`), preprocessing the row once, with numpy (`row_transform`):
    for one row, scikit-learn's ColumnTransformer costs more than the model and the
    explanation together."""
    if len(X_row) != 1:
        raise BadRequest(f"explain takes one row, got {len(X_row)}", location="X_row")
    missing = [f for f in trained.feature_names if f not in X_row.columns]
    if missing:
        raise BadRequest(f"X_row lacks features: {', '.join(missing)}", location="X_row")
    X_row = X_row[trained.feature_names]
    pre = trained.pipeline.named_steps["preprocess"]
    model = trained.pipeline.named_steps["model"]
    names = [str(n) for n in pre.get_feature_names_out()]
    Z = row_transform(pre)(X_row)
    z = Z.reshape(-1)
    value = float(predict_values(trained.task.kind, model, Z)[0])
    ref = np.array([trained.reference[n] for n in names], dtype=float)
    groups = column_groups(trained, names)
    features = list(groups)
    if trained.model_type in ("logistic", "linear"):
        per_column = _linear(model, z, ref)
        totals = [float(per_column[groups[f]].sum()) for f in features]
    elif method == "shap" or (method == "auto" and importlib.util.find_spec("shap") is not None):
        per_column = _shap(model, z)
        totals = [float(per_column[groups[f]].sum()) for f in features]
    else:
        totals = [float(v) for v in sampled_shapley(model, z, ref, [groups[f] for f in features])]
    row = X_row.iloc[0]
    out = [Contribution(f, _plain(row[f]), t) for f, t in zip(features, totals, strict=True)]
    return value, sorted(out, key=lambda c: -abs(c.contribution))


def _plain(value: object) -> object:
    """numpy scalars as Python ones; NaN (missing) as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def global_importance(trained: Any) -> list[tuple[str, float]]:
    """Permutation importance of each original feature on the held-out rows (computed at
    training; drop in AUROC or R²), largest first."""
    return [(str(n), float(v)) for n, v in trained.metrics["global_importance"]]
