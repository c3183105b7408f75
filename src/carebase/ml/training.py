"""Training: preprocessing and model inside one scikit-learn Pipeline, fitted on a
patient-level training split, evaluated by CV on that split and on a held-out test split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from carebase.errors import BadRequest
from carebase.ml import evaluation
from carebase.ml.features import Dataset
from carebase.ml.tasks import Task

ModelType = Literal["logistic", "linear", "hgb"]
MODELS_BY_KIND = {"classification": ("logistic", "hgb"), "regression": ("linear", "hgb")}


@dataclass
class TrainedModel:
    """A fitted pipeline with what it was trained on and how well it did."""

    task: Task
    model_type: str
    pipeline: Pipeline
    feature_names: list[str]
    reference: dict[str, float]  # transformed column -> training mean (explanation baseline)
    metrics: dict[str, Any]
    trained_at: str
    data_fingerprint: str

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class (classification) or the predicted value."""
        return evaluation.predict_values(self.task.kind, self.pipeline, X[self.feature_names])


def build_pipeline(task: Task, feature_names: list[str], model: str, seed: int = 0) -> Pipeline:
    """Preprocessing (median imputation with missing-indicators and scaling for numbers,
    one-hot for categories) then the model. Imbalance: `class_weight="balanced"` when the task
    asks for it (each class weighted by n / (2 * its count)), for both model families."""
    if model not in MODELS_BY_KIND[task.kind]:
        raise BadRequest(
            f"model {model!r} does not fit a {task.kind} task; use one of "
            f"{', '.join(MODELS_BY_KIND[task.kind])}",
            location="model",
        )
    categorical = [f for f in feature_names if f in task.categorical_features()]
    numeric = [f for f in feature_names if f not in categorical]
    numbers = Pipeline(
        [
            (
                "impute",
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ),
            ("scale", StandardScaler()),
        ]
    )
    parts: list[tuple[str, Any, list[str]]] = [("num", numbers, numeric)]
    if categorical:
        parts.append(
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)
        )
    preprocess = ColumnTransformer(parts, verbose_feature_names_out=False)
    weight = "balanced" if task.class_weight == "balanced" else None
    estimator: Any
    if model == "logistic":
        estimator = LogisticRegression(C=1.0, class_weight=weight, max_iter=5000)
    elif model == "linear":
        estimator = LinearRegression()
    elif task.kind == "classification":
        estimator = HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=200,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            class_weight=weight,
            early_stopping=False,
            random_state=seed,
        )
    else:
        estimator = HistGradientBoostingRegressor(
            learning_rate=0.05,
            max_iter=200,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def fingerprint(dataset: Dataset) -> str:
    """sha256 of the training table (features, labels, patients, index times)."""
    digest = hashlib.sha256()
    digest.update(dataset.X.to_csv(index=False, float_format="%.17g").encode())
    digest.update(np.asarray(dataset.y, dtype=float).tobytes())
    digest.update("\n".join(dataset.patient_ids).encode())
    digest.update("\n".join(dataset.index_times).encode())
    return digest.hexdigest()


def transformed_reference(pipeline: Pipeline, X: pd.DataFrame) -> dict[str, float]:
    """Mean of each preprocessed column over `X` (the baseline explanations compare with)."""
    pre = pipeline.named_steps["preprocess"]
    Z = np.asarray(pre.transform(X), dtype=float)
    return {
        str(n): float(v) for n, v in zip(pre.get_feature_names_out(), Z.mean(axis=0), strict=True)
    }


def _importance(
    task: Task, pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, seed: int
) -> list[tuple[str, float]]:
    """Permutation importance on held-out rows (drop in AUROC or R² when a feature's column is
    shuffled), over the original features; model-agnostic, so every model type has one."""
    scoring = "roc_auc" if task.kind == "classification" else "r2"
    result = permutation_importance(pipeline, X, y, scoring=scoring, n_repeats=3, random_state=seed)
    pairs = [(str(n), float(v)) for n, v in zip(X.columns, result.importances_mean, strict=True)]
    return sorted(pairs, key=lambda p: -abs(p[1]))


def train(
    task: Task,
    dataset: Dataset,
    model: ModelType,
    seed: int = 0,
    *,
    folds: int = 5,
    bootstrap_rounds: int = 200,
) -> TrainedModel:
    """Split patients 80/20 (stratified), cross-validate on the 80 %, fit on the 80 %, and
    evaluate on the 20 % held out. The returned pipeline is the one fitted on the 80 %, so
    the held-out metrics describe exactly the model that is shipped."""
    if len(dataset.y) == 0:
        raise BadRequest(f"task {task.name}: the dataset has no rows", location="dataset")
    X, y, groups = dataset.X[dataset.feature_names], dataset.y, dataset.patient_ids
    train_rows, test_rows = evaluation.holdout_split(task.kind, y, groups, 0.2, seed)
    pipeline = build_pipeline(task, dataset.feature_names, model, seed)
    train_groups = [groups[i] for i in train_rows]
    cv = evaluation.cross_validate(
        task.kind,
        pipeline,
        X.iloc[train_rows],
        y[train_rows],
        train_groups,
        folds,
        seed,
        task.threshold,
    )
    pipeline.fit(X.iloc[train_rows], y[train_rows])
    X_test, y_test = X.iloc[test_rows], y[test_rows]
    pred = evaluation.predict_values(task.kind, pipeline, X_test)
    held_out = evaluation.evaluate_holdout(
        task.kind,
        y_test,
        pred,
        X_test,
        [groups[i] for i in test_rows],
        task.threshold,
        seed,
        bootstrap_rounds,
    )
    metrics: dict[str, Any] = {
        "n_rows": len(y),
        "n_patients": len(set(groups)),
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "class_weight": task.class_weight if task.kind == "classification" else None,
        "cv": cv,
        "held_out": held_out,
        "global_importance": _importance(task, pipeline, X_test, y_test, seed),
    }
    return TrainedModel(
        task=task,
        model_type=model,
        pipeline=pipeline,
        feature_names=list(dataset.feature_names),
        reference=transformed_reference(pipeline, X.iloc[train_rows]),
        metrics=metrics,
        trained_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        data_fingerprint=fingerprint(dataset),
    )
