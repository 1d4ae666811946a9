"""The median pruner, reading the completed trials once per trial instead of once per fold.

Optuna's percentile pruners read every completed trial from the study at each check; on RDB
storage that is a query per fold, the largest share of what the storage adds to a trial. Here a
trial's first check reads them and its later folds reuse what was read: a trial completed by
another worker meanwhile is compared against from the next trial on. Imported only where Optuna
is (the service checks job files without it).
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

COMPLETE_ONLY = (TrialState.COMPLETE,)


class ReadOncePerTrial(optuna.pruners.BasePruner):
    """``inner`` deciding on the completed trials as they were at the trial's first check."""

    def __init__(self, inner: optuna.pruners.PercentilePruner) -> None:
        self.inner = inner
        self._trial: int | None = None
        self._completed: list[FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if trial.number != self._trial:
            self._completed = study.get_trials(deepcopy=False, states=COMPLETE_ONLY)
            self._trial = trial.number
        view = _CompletedTrialsAsRead(study, self._completed)
        return self.inner.prune(cast(optuna.Study, view), trial)


class _CompletedTrialsAsRead:
    """The study as the pruner sees it: its completed trials as read, the rest as it is."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        self._study = study
        self._completed = completed

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if isinstance(states, Sequence) and tuple(states) == COMPLETE_ONLY:
            return copy.deepcopy(self._completed) if deepcopy else self._completed
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
