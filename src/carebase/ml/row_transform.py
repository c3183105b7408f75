"""The preprocessing of one row with numpy, from the fitted ColumnTransformer's parameters.

Serving preprocesses one patient's row per call; scikit-learn's ColumnTransformer costs about
2 ms for that (pandas column selection, validation, hstack per step), more than the model
and its explanation. `row_transform(pre)` reads the fitted parameters of the pipeline
`training.build_pipeline` makes (median imputation with missing-indicators, standard
scaling, one-hot encoding) once, and applies them to a row in a few microseconds, giving
the same columns as `pre.transform` (the tests hold them equal). A ColumnTransformer of any
other shape gets None, and the caller uses `pre.transform`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


@dataclass(frozen=True)
class RowTransform:
    """Fitted parameters of the numeric and categorical steps, in output column order."""

    numeric: tuple[str, ...]
    fill: np.ndarray  # imputation value per numeric column
    indicated: np.ndarray  # numeric column positions that get a missing-indicator
    mean: np.ndarray  # per imputed + indicator column (0 when not centred)
    scale: np.ndarray  # per imputed + indicator column (1 when not scaled)
    categorical: tuple[str, ...]
    categories: tuple[dict[object, int], ...]  # level -> position within its block
    width: int

    def __call__(self, row: pd.DataFrame) -> np.ndarray:
        """The preprocessed (1, width) array of the one-row frame `row`."""
        first = row.iloc[0]
        x = np.array([first[c] for c in self.numeric], dtype=float)
        missing = np.isnan(x)
        filled = np.where(missing, self.fill, x)
        numbers = np.concatenate([filled, missing[self.indicated].astype(float)])
        out = np.zeros(self.width)
        out[: len(numbers)] = (numbers - self.mean) / self.scale
        at = len(numbers)
        for name, levels in zip(self.categorical, self.categories, strict=True):
            hit = levels.get(first[name])
            if hit is not None:  # an unseen level is all zeros (handle_unknown="ignore")
                out[at + hit] = 1.0
            at += len(levels)
        return out.reshape(1, -1)


def _numbers_step(step: Any) -> tuple[SimpleImputer, StandardScaler] | None:
    if not isinstance(step, Pipeline) or len(step.steps) != 2:
        return None
    impute, scale = step.steps[0][1], step.steps[1][1]
    if not isinstance(impute, SimpleImputer) or not isinstance(scale, StandardScaler):
        return None
    if impute.add_indicator and impute.indicator_.features != "missing-only":
        return None
    missing = impute.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)):
        return None
    return impute, scale


def _build(pre: ColumnTransformer) -> RowTransform | None:
    steps = [(name, step, list(cols)) for name, step, cols in pre.transformers_]
    numeric: list[str] = []
    categorical: list[str] = []
    fitted: tuple[SimpleImputer, StandardScaler] | None = None
    encoder: OneHotEncoder | None = None
    for name, step, cols in steps:
        if name == "remainder":
            if step != "drop":
                return None
        elif name == "num" and fitted is None and (fitted := _numbers_step(step)) is not None:
            numeric = [str(c) for c in cols]
        elif (
            name == "cat"
            and isinstance(step, OneHotEncoder)
            and step.drop is None
            and step.handle_unknown == "ignore"
            and getattr(step, "infrequent_categories_", None) is None
        ):
            encoder, categorical = step, [str(c) for c in cols]
        else:
            return None
    if fitted is None or [n for n, *_ in steps if n != "remainder"] != (
        ["num", "cat"] if encoder else ["num"]
    ):
        return None
    impute, scale = fitted
    indicated = (
        np.asarray(impute.indicator_.features_, dtype=int)
        if impute.add_indicator
        else np.zeros(0, dtype=int)
    )
    width_numbers = len(numeric) + len(indicated)
    mean = scale.mean_ if scale.with_mean else np.zeros(width_numbers)
    spread = scale.scale_ if scale.with_std else np.ones(width_numbers)
    if len(impute.statistics_) != len(numeric) or len(mean) != width_numbers:
        return None  # keep_empty_features=False dropped a column: not this shape
    categories = tuple(
        {level: i for i, level in enumerate(levels.tolist())}
        for levels in (encoder.categories_ if encoder is not None else [])
    )
    width = width_numbers + sum(len(levels) for levels in categories)
    if width != len(pre.get_feature_names_out()):
        return None
    return RowTransform(
        tuple(numeric),
        np.asarray(impute.statistics_, dtype=float),
        indicated,
        np.asarray(mean, dtype=float),
        np.asarray(spread, dtype=float),
        tuple(categorical),
        categories,
        width,
    )


@functools.lru_cache(maxsize=64)
def row_transform(pre: ColumnTransformer) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function preprocessing one row as `pre.transform` does: the numpy one when `pre`
    has the shape training builds, else `pre.transform` itself."""
    fast = _build(pre)
    if fast is not None:
        return fast
    return lambda row: np.asarray(pre.transform(row), dtype=float)
