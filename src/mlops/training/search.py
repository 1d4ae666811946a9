"""One hyperparameter search: an Optuna study whose trials cross-validate one configuration.

Each fold's running mean is reported as an intermediate value, so the pruner can stop a poor
configuration after its first folds instead of paying for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlops.training.catalogue import CatalogueError, EstimatorSpec, Task
from mlops.training.space import SearchSpace

# scikit-learn and Optuna are imported where used: the service imports this module to check
# job files, and should not pay a second of start-up for libraries only workers need.
if TYPE_CHECKING:
    import optuna


MEDIAN_WARMUP_STEPS = 1  # the median pruner judges a trial from its second fold on


@dataclass(frozen=True)
class Validation:
    """Cross-validation with ``cv_folds`` folds, or one ``holdout`` split (a fraction)."""

    cv_folds: int | None = 5
    holdout: float | None = None
    seed: int = 42


def check_metric(metric: str) -> None:
    from sklearn.metrics import get_scorer_names

    if metric not in get_scorer_names():
        raise CatalogueError("metric", f"unknown metric {metric!r}; e.g. accuracy, roc_auc, f1, r2")


def _splits(task: Task, validation: Validation, x: Any, y: Any) -> list[tuple[Any, Any]]:
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    indices = np.arange(len(y))
    if validation.holdout:
        stratify = y if task is Task.CLASSIFICATION else None
        train, test = train_test_split(
            indices, test_size=validation.holdout, random_state=validation.seed, stratify=stratify
        )
        return [(train, test)]
    folds = validation.cv_folds or 5
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=validation.seed)
        if task is Task.CLASSIFICATION
        else KFold(folds, shuffle=True, random_state=validation.seed)
    )
    return list(splitter.split(x, y))


def make_objective(
    spec: EstimatorSpec,
    task: Task,
    space: SearchSpace,
    x: Any,
    y: Any,
    metric: str,
    validation: Validation,
) -> Callable[[optuna.Trial], float]:
    import numpy as np
    import optuna
    from sklearn.base import clone
    from sklearn.metrics import get_scorer

    scorer = get_scorer(metric)
    splits = _splits(task, validation, x, y)

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        template = spec.build(task, params, seed=validation.seed)
        # Each report and pruning check is a storage round trip: none after the last fold (the
        # trial's value says it) and no check before the pruner may prune.
        first_check = _first_prunable_step(trial.study.pruner)
        scores: list[float] = []
        for fold, (train, test) in enumerate(splits):
            model = clone(template)
            model.fit(_rows(x, train), _rows(y, train))
            scores.append(float(scorer(model, _rows(x, test), _rows(y, test))))
            if fold == len(splits) - 1:
                break
            trial.report(float(np.mean(scores)), fold)
            if fold >= first_check and trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    return objective


def _first_prunable_step(pruner: optuna.pruners.BasePruner) -> float:
    import optuna

    if isinstance(pruner, optuna.pruners.NopPruner):
        return float("inf")
    from mlops.training.pruning import ReadOncePerTrial

    if isinstance(pruner, ReadOncePerTrial | optuna.pruners.MedianPruner):
        return MEDIAN_WARMUP_STEPS
    return 0


def _rows(data: Any, index: Any) -> Any:
    return data.iloc[index] if hasattr(data, "iloc") else data[index]


def make_sampler(kind: Literal["tpe", "random"], seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(kind: Literal["median", "hyperband", "none"]) -> optuna.pruners.BasePruner:
    import optuna

    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    from mlops.training.pruning import ReadOncePerTrial

    median = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=MEDIAN_WARMUP_STEPS)
    return ReadOncePerTrial(median)
