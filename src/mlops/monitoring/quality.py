"""Model quality from logged predictions and the ground truth reported for them.

The task is taken from the values unless the caller names it: labels and predictions that are
all booleans, strings or integers are a classification; anything else numeric is a regression,
except that numeric predictions in [0, 1] against two classes are a binary classifier's scores
(thresholded at 0.5 for the label metrics, used as they are for ROC AUC).

Classification: accuracy, and precision, recall and F1 of the positive class when there are
two classes (the positive class is 1, True or "1" when present, else the second in sorted
order) or their macro average over the classes otherwise; ROC AUC for two classes, from the
scores when there are some, else from the predicted labels (then it equals balanced accuracy),
and absent when the labels hold only one class. Regression: MAE, RMSE and R² (absent for fewer
than two rows or constant labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["classification", "regression"]
POSITIVE_NAMES = (1, True, "1")


@dataclass
class Quality:
    task: Task
    rows: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class QualityError(ValueError):
    """Labels and predictions that cannot be scored together (the reason in words)."""


def infer_task(labels: Sequence[Any], predictions: Sequence[Any]) -> Task:
    if all(_discrete(v) for v in labels) and all(_discrete(v) for v in predictions):
        return "classification"
    if len(set(labels)) <= 2 and all(_probability(v) for v in predictions):
        return "classification"
    return "regression"


def score(labels: Sequence[Any], predictions: Sequence[Any], task: Task | None = None) -> Quality:
    if len(labels) != len(predictions):
        raise QualityError(f"{len(labels)} labels for {len(predictions)} predictions")
    if not labels:
        raise QualityError("no labelled predictions in the window")
    task = task or infer_task(labels, predictions)
    if task == "classification":
        return _classification(list(labels), list(predictions))
    return _regression(labels, predictions)


def _classification(labels: list[Any], predictions: list[Any]) -> Quality:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    quality = Quality("classification", len(labels))
    scores: list[float] | None = None
    classes = sorted(set(labels), key=str)
    if len(classes) <= 2 and not all(_discrete(v) for v in predictions):
        if not all(_probability(v) for v in predictions):
            raise QualityError("a classifier's numeric predictions must be scores in [0, 1]")
        scores = [float(v) for v in predictions]
        positive = _positive(classes) if classes else 1
        negative = next((c for c in classes if c != positive), 0)
        predictions = [positive if s >= 0.5 else negative for s in scores]
        quality.notes.append("predictions are scores: labels taken at 0.5")
    if not all(_hashable(v) for v in [*labels, *predictions]):
        raise QualityError("classification labels must be numbers, strings or booleans")
    keyed_labels = [str(v) for v in labels]
    keyed_predictions = [str(v) for v in predictions]
    quality.metrics["accuracy"] = float(accuracy_score(keyed_labels, keyed_predictions))
    every = sorted(set(keyed_labels) | set(keyed_predictions))
    if len(every) == 2:
        positive_key = str(_positive([v for v in [*labels, *predictions]]))
        precision, recall, f1, _ = precision_recall_fscore_support(
            keyed_labels,
            keyed_predictions,
            pos_label=positive_key,
            average="binary",
            zero_division=0,
        )
        quality.notes.append(f"precision, recall and F1 of the positive class {positive_key}")
    else:
        precision, recall, f1, _ = precision_recall_fscore_support(
            keyed_labels, keyed_predictions, average="macro", zero_division=0
        )
        quality.notes.append(f"precision, recall and F1 averaged over {len(every)} classes")
    quality.metrics.update(precision=float(precision), recall=float(recall), f1=float(f1))
    quality.metrics["roc_auc"] = None
    if len(set(keyed_labels)) == 2 and len(every) == 2:
        positive_key = str(_positive([*labels, *predictions]))
        truth = [1 if v == positive_key else 0 for v in keyed_labels]
        ranking = scores or [1.0 if v == positive_key else 0.0 for v in keyed_predictions]
        quality.metrics["roc_auc"] = float(roc_auc_score(truth, ranking))
        if scores is None:
            quality.notes.append("ROC AUC from predicted labels (no scores): balanced accuracy")
    return quality


def _regression(labels: Sequence[Any], predictions: Sequence[Any]) -> Quality:
    truth = [_number(v, "label") for v in labels]
    guessed = [_number(v, "prediction") for v in predictions]
    errors = [g - t for t, g in zip(truth, guessed, strict=True)]
    quality = Quality("regression", len(truth))
    quality.metrics["mae"] = sum(abs(e) for e in errors) / len(errors)
    quality.metrics["rmse"] = math.sqrt(sum(e * e for e in errors) / len(errors))
    mean = sum(truth) / len(truth)
    spread = sum((t - mean) ** 2 for t in truth)
    quality.metrics["r2"] = 1 - sum(e * e for e in errors) / spread if spread > 0 else None
    if spread == 0:
        quality.notes.append("R² is undefined: the labels are constant")
    return quality


def _positive(classes: Sequence[Any]) -> Any:
    for candidate in POSITIVE_NAMES:
        for value in classes:
            if type(value) is type(candidate) and value == candidate:
                return value
    return sorted(set(classes), key=str)[-1]


def _discrete(value: Any) -> bool:
    return isinstance(value, bool | str | int)


def _probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _hashable(value: Any) -> bool:
    return isinstance(value, bool | str | int | float)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise QualityError(f"a regression {what} must be a number, got {value!r}")
    return float(value)
