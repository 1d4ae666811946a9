"""Scoring champion and challenger on one holdout and writing the comparison report.

Both versions are loaded from the registry as the serving stack loads them and predict the same
rows; the report keeps every figure the decision rests on. Blocking: run it in a thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops.monitoring.quality import QualityError, Task, score
from mlops.retraining.comparison import decide, mcnemar, paired_bootstrap
from mlops.retraining.schemas import LOWER_IS_BETTER, ComparisonSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class EvaluationError(ValueError):
    """The comparison cannot be made (a model does not load or predict, a metric is missing)."""


def compare_versions(
    tracking_uri: str,
    model_name: str,
    champion: str,
    challenger: str,
    holdout: pd.DataFrame,
    label: str,
    spec: ComparisonSpec,
    task: Task,
) -> dict[str, Any]:
    if label not in holdout.columns:
        raise EvaluationError(f"the holdout has no label column {label!r}")
    features = holdout.drop(columns=[label])
    truth = holdout[label].to_numpy()
    scored = {
        role: _predict(tracking_uri, model_name, version, features, spec.metric)
        for role, version in (("champion", champion), ("challenger", challenger))
    }
    report: dict[str, Any] = {
        "metric": spec.metric,
        "test": spec.effective_test,
        "alpha": spec.alpha,
        "min_rows": spec.min_rows,
        "min_effect": spec.min_effect,
        "rows": len(truth),
    }
    for role, version in (("champion", champion), ("challenger", challenger)):
        report[role] = {"version": version, "metrics": _metrics(truth, scored[role][0], task)}
    if len(truth) < spec.min_rows:
        improvement, significant = 0.0, False
    elif spec.effective_test == "mcnemar":
        improvement, significant = _mcnemar(report, truth, scored, spec)
    else:
        improvement, significant = _bootstrap(report, truth, scored, spec)
    decision = decide(
        len(truth),
        improvement,
        significant,
        min_rows=spec.min_rows,
        min_effect=spec.min_effect,
    )
    report.update(
        improvement=improvement,
        significant=significant,
        decision=decision.outcome,
        reason=decision.reason,
    )
    return report


def _mcnemar(
    report: dict[str, Any],
    truth: np.ndarray,
    scored: dict[str, tuple[np.ndarray, np.ndarray | None]],
    spec: ComparisonSpec,
) -> tuple[float, bool]:
    champion, challenger = (_correct(truth, scored[role][0]) for role in ("champion", "challenger"))
    result = mcnemar(champion, challenger)
    report["mcnemar"] = {
        "champion_only_correct": result.champion_only,
        "challenger_only_correct": result.challenger_only,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "exact": result.exact,
    }
    return result.accuracy_difference, result.p_value < spec.alpha


def _bootstrap(
    report: dict[str, Any],
    truth: np.ndarray,
    scored: dict[str, tuple[np.ndarray, np.ndarray | None]],
    spec: ComparisonSpec,
) -> tuple[float, bool]:
    metric = _metric_function(spec.metric)
    use_scores = spec.metric == "roc_auc"
    first, second = (
        (scored[role][1] if use_scores else scored[role][0]) for role in ("champion", "challenger")
    )
    assert first is not None and second is not None
    result = paired_bootstrap(
        list(truth),
        list(first),
        list(second),
        metric,
        resamples=spec.resamples,
        confidence=1 - spec.alpha,
    )
    lower_better = spec.metric in LOWER_IS_BETTER
    report["bootstrap"] = {
        "champion": result.champion,
        "challenger": result.challenger,
        "difference": result.difference,
        "interval": [result.low, result.high],
        "confidence": result.confidence,
        "resamples": result.resamples,
    }
    # the interval excludes zero on the challenger's side
    significant = result.high < 0 if lower_better else result.low > 0
    improvement = -result.difference if lower_better else result.difference
    return improvement, significant


def _predict(
    tracking_uri: str, model_name: str, version: str, features: pd.DataFrame, metric: str
) -> tuple[np.ndarray, np.ndarray | None]:
    import numpy as np

    from mlops.deployments.serving import ModelLoadFailed, open_version

    try:
        pyfunc, _ = open_version(tracking_uri, model_name, version)
    except ModelLoadFailed as exc:
        raise EvaluationError(exc.reason) from exc
    try:
        predictions: np.ndarray = np.asarray(pyfunc.predict(features)).ravel()
        scores: np.ndarray | None = None
        if metric == "roc_auc":
            raw = pyfunc.get_raw_model()  # type: ignore[no-untyped-call]
            if not hasattr(raw, "predict_proba"):
                raise EvaluationError(f"version {version} gives no probabilities for roc_auc")
            scores = np.asarray(raw.predict_proba(features[list(raw.feature_names_in_)]))[:, -1]
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"version {version} failed to predict the holdout: {exc}") from exc
    return predictions, scores


def _correct(truth: np.ndarray, predictions: np.ndarray) -> list[bool]:
    """Row by row: did the model get it right (numbers compared as numbers, else as text)."""
    try:
        return [float(a) == float(b) for a, b in zip(truth, predictions, strict=True)]
    except (TypeError, ValueError):
        return [str(a) == str(b) for a, b in zip(truth, predictions, strict=True)]


def _metrics(truth: np.ndarray, predictions: np.ndarray, task: Task) -> dict[str, float | None]:
    try:
        return score(truth.tolist(), predictions.tolist(), task).metrics
    except QualityError:
        return {}


def _metric_function(name: str) -> Any:
    from sklearn import metrics

    functions: dict[str, Any] = {
        "accuracy": metrics.accuracy_score,
        "precision": lambda y, p: metrics.precision_score(y, p, zero_division=0),
        "recall": lambda y, p: metrics.recall_score(y, p, zero_division=0),
        "f1": lambda y, p: metrics.f1_score(y, p, zero_division=0),
        "roc_auc": metrics.roc_auc_score,
        "mae": metrics.mean_absolute_error,
        "rmse": metrics.root_mean_squared_error,
        "r2": metrics.r2_score,
    }
    if name not in functions:
        raise EvaluationError(f"no metric {name!r}")
    return functions[name]
