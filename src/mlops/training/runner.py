"""The three phases of a training job, as step processes run them.

``prepare`` checks the data, creates the Optuna study and the MLflow parent run; ``search`` is
one worker taking trials from the shared study until the job has its trials (several run at
once, in several processes); ``finalize`` refits the best configuration on all the training
data, logs it and registers it. Each phase is safe to run again after a crash: the study and
the parent run are found by name and resumed, never duplicated.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlops.steps.framework import StepError
from mlops.training import tracking
from mlops.training.catalogue import CatalogueError, Task
from mlops.training.search import make_objective, make_pruner, make_sampler
from mlops.training.spec import TrainingJobSpec
from mlops.training.stores import open_storage, optuna_storage_url

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from mlops.steps.artifacts import ArtifactStore

ATTR_EXPERIMENT = "mlflow_experiment_id"
ATTR_PARENT_RUN = "mlflow_parent_run_id"
ATTR_DIGEST = "dataset_digest"
ATTR_STARTED = "started_at"
ATTR_ERROR = "error"
ATTR_WORKER = "worker"
ATTR_RESULT = "result"
# When this many trials have all failed and none succeeded, the job stops: the cause is the
# data or the space, and more trials would only repeat it.
FAILED_TRIALS_BEFORE_GIVING_UP = 3
LOGGER_NICENESS = 10


@dataclass(frozen=True)
class TrainingData:
    features: pd.DataFrame
    target: pd.Series
    digest: str
    tags: dict[str, str] = field(default_factory=dict)  # what the data says of itself


def feature_tags(frame: pd.DataFrame) -> dict[str, str]:
    """A ``features://`` training set's feature service and view versions, as MLflow tags
    (kept on the runs and model versions: the feature store's lineage reads them)."""
    from mlops.features.dataset import FEATURE_LINEAGE

    lineage = frame.attrs.get(FEATURE_LINEAGE)
    if not lineage:
        return {}
    views = ",".join(f"{view}:{version}" for view, version in sorted(lineage["views"].items()))
    return {tracking.TAG_FEATURE_SERVICE: lineage["service"], tracking.TAG_FEATURE_VIEWS: views}


def training_data(spec: TrainingJobSpec, artifacts: ArtifactStore | None) -> TrainingData:
    """The features and labels, or a StepError a person can act on."""
    from mlops.steps.datasets import load_dataset

    frame = load_dataset(spec.dataset, artifacts)
    return split_frame(frame, spec.target, spec.task, spec.dataset, spec.feature_columns)


def split_frame(
    frame: pd.DataFrame,
    target: str,
    task: Task,
    where: str,
    feature_columns: Sequence[str] | None = None,
) -> TrainingData:
    import pandas as pd

    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise StepError(f"target column {target!r} is not in {where}; its columns: {columns}")
    if len(frame) == 0:
        raise StepError(f"{where} has no rows")
    if feature_columns:
        absent = [str(c) for c in feature_columns if c not in frame.columns or c == target]
        if absent:
            raise StepError(f"feature columns {absent} are not in {where} (or are the target)")
        features = frame[list(feature_columns)]
    else:
        features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise StepError(f"{where} has no feature columns besides {target!r}")
    text = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise StepError(
            f"columns {', '.join(text[:10])} are not numeric; encode them first "
            "(a feature_engineering step does)"
        )
    labels = frame[target]
    if labels.isna().any():
        raise StepError(f"target column {target!r} has {int(labels.isna().sum())} empty values")
    if task is Task.CLASSIFICATION:
        classes = labels.nunique()
        if classes < 2:
            raise StepError(f"classification needs at least two classes in {target!r}")
        if classes > max(50, len(labels) // 2):
            raise StepError(
                f"{target!r} has {classes} distinct values: it looks continuous; use "
                "task: regression"
            )
    return TrainingData(features, labels, dataset_digest(frame), feature_tags(frame))


def dataset_digest(frame: pd.DataFrame) -> str:
    import pandas as pd

    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _study(spec: TrainingJobSpec, name: str, worker: int = 0) -> optuna.Study:
    import optuna

    seed = None if spec.sampler.seed is None else spec.sampler.seed + worker
    return optuna.create_study(
        study_name=name,
        storage=open_storage(optuna_storage_url()),
        direction=spec.direction,
        sampler=make_sampler(spec.sampler.type, seed),
        pruner=make_pruner(spec.pruner.type),
        load_if_exists=True,
    )


def prepare(
    spec: TrainingJobSpec,
    study_name: str,
    experiment: str,
    data: TrainingData,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Create (or find again) the study and the MLflow parent run of one search."""
    try:
        spec.resolved()
    except CatalogueError as exc:
        raise StepError(f"{exc.field}: {exc}") from None
    study = _study(spec, study_name)
    attrs = study.user_attrs
    if ATTR_PARENT_RUN not in attrs:
        experiment_id = tracking.experiment_for(experiment)
        parent = tracking.start_parent_run(
            experiment_id,
            "search",
            {
                **tags,
                **data.tags,
                tracking.TAG_DATASET: spec.dataset,
                tracking.TAG_DATASET_DIGEST: data.digest,
            },
        )
        tracking.client().log_batch(parent, params=_job_params(spec))
        study.set_user_attr(ATTR_EXPERIMENT, experiment_id)
        study.set_user_attr(ATTR_PARENT_RUN, parent)
        study.set_user_attr(ATTR_DIGEST, data.digest)
        study.set_user_attr(ATTR_STARTED, time.time())
        attrs = study.user_attrs
    return {
        "study": study_name,
        "experiment_id": attrs[ATTR_EXPERIMENT],
        "parent_run_id": attrs[ATTR_PARENT_RUN],
        "dataset_digest": attrs[ATTR_DIGEST],
    }


def _job_params(spec: TrainingJobSpec) -> list[Any]:
    from mlflow.entities import Param

    values = spec.model_dump(mode="json", exclude={"search_space"}, exclude_none=True)
    flat = {key: value for key, value in values.items() if not isinstance(value, dict)}
    flat["sampler"] = spec.sampler.type
    flat["pruner"] = spec.pruner.type
    flat["metric"] = spec.effective_metric
    return [Param(key, str(value)[:6000]) for key, value in sorted(flat.items())]


def job_objective(spec: TrainingJobSpec, data: TrainingData) -> Callable[[optuna.Trial], float]:
    """The objective a job's trials run: its estimator, space, metric and validation."""
    estimator, space = spec.resolved()
    return make_objective(
        estimator,
        spec.task,
        space,
        data.features,
        data.target,
        spec.effective_metric,
        spec.validation,
    )


def search(spec: TrainingJobSpec, study_name: str, data: TrainingData, worker: int = 0) -> int:
    """Run trials of the shared study until the job has ``n_trials`` finished ones or its time
    is up; return how many this worker ran."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(spec, study_name, worker)
    earlier = len(study.get_trials(deepcopy=False))
    if earlier and spec.sampler.seed is not None:
        # a resumed worker must not replay the random start-up suggestions of its first attempt
        study.sampler = make_sampler(spec.sampler.type, spec.sampler.seed + worker + 7919 * earlier)
    attrs = study.user_attrs
    experiment_id, parent_run_id = attrs[ATTR_EXPERIMENT], attrs[ATTR_PARENT_RUN]
    deadline = float(attrs[ATTR_STARTED]) + spec.timeout_seconds
    objective = job_objective(spec, data)

    def recorded(trial: optuna.Trial) -> float:
        trial.set_user_attr(ATTR_WORKER, worker)
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr(ATTR_ERROR, f"{type(exc).__name__}: {exc}"[:2000])
            raise

    # Trials are logged to MLflow by a process of their own, off the trials' path: on the
    # embedded store each costs 30-50 ms of Python, which in a thread would hold the GIL the
    # trials need. All are written before the worker returns.
    pending: list[Future[None]] = []

    def log(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        pending.append(
            trial_logger().submit(tracking.log_trial, experiment_id, parent_run_id, trial)
        )

    try:
        return _run_trials(spec, study, recorded, log, deadline, worker)
    finally:
        failures = [f.exception() for f in pending if f.exception() is not None]
        if failures:
            print(f"{len(failures)} trials could not be logged to MLflow: {failures[0]}")


@lru_cache(maxsize=1)
def trial_logger() -> ProcessPoolExecutor:
    """One logging process per worker process, started on first use and kept (a fresh
    interpreter: forking a process with threads is unsafe), at a lower priority: where it
    competes with a trial for a core, the trial goes first."""
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_trial_logger,
        initargs=(os.getpid(),),
    )


def _start_trial_logger(parent: int) -> None:
    """In the logging process: a lower priority, and an exit when the worker that started it
    dies. A killed worker never closes the pool's queue (the process holds both of its ends),
    and the kernel's parent-death signal follows the thread that started the process, which
    may end first, so a thread watches the parent."""
    os.nice(LOGGER_NICENESS)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run_trials(
    spec: TrainingJobSpec,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    log: Callable[[optuna.Study, optuna.trial.FrozenTrial], None],
    deadline: float,
    worker: int,
) -> int:
    """This worker's remaining share in one ``optimize`` call: the study is read once here,
    not between trials (each read costs a query per trial)."""
    from optuna.trial import TrialState

    fail_abandoned_trials(study, worker)
    counts = count_trials(study, worker)
    remaining = worker_quota(spec.n_trials, spec.parallelism, worker) - counts.finished_by_worker
    if remaining <= 0 or counts.finished >= spec.n_trials or time.time() >= deadline:
        return 0
    tally = {"succeeded": counts.succeeded, "failed": counts.failed, "ran": 0}
    first_error = [counts.first_error] if counts.first_error else []

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log(study, trial)
        tally["ran"] += 1
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            tally["succeeded"] += 1
        elif ATTR_ERROR in trial.user_attrs:
            tally["failed"] += 1
            first_error.append(trial.user_attrs[ATTR_ERROR])
        if tally["failed"] >= FAILED_TRIALS_BEFORE_GIVING_UP and tally["succeeded"] == 0:
            study.stop()

    study.optimize(
        objective,
        n_trials=remaining,
        timeout=deadline - time.time(),
        callbacks=[after_trial],
        catch=(Exception,),
    )
    if tally["failed"] >= FAILED_TRIALS_BEFORE_GIVING_UP and tally["succeeded"] == 0:
        raise StepError(f"the first {tally['failed']} trials all failed: {first_error[0]}")
    return tally["ran"]


def fail_abandoned_trials(study: optuna.Study, worker: int | None = None) -> list[int]:
    """Fail the trials an earlier attempt of this worker left running when it died (or, with no
    worker named, every trial still running: for when all workers are done). The engine runs one
    attempt of a step at a time, so nobody is working on them any more. They fail without an
    error: they do not count toward ``n_trials`` and their configurations are tried again.

    This replaces Optuna's trial heartbeats, which cost a write and a stale-trial query on every
    trial (about 2 % of a half-second trial) to learn what the engine already knows."""
    from optuna.trial import TrialState

    abandoned = [
        trial.number
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if worker is None or trial.user_attrs.get(ATTR_WORKER) == worker
    ]
    for number in abandoned:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return abandoned


def worker_quota(n_trials: int, parallelism: int, worker: int) -> int:
    """This worker's fixed share of the trials. Counting the shared study and then starting a
    trial is not atomic: with one shared count, two workers both take the last trial."""
    share, extra = divmod(n_trials, parallelism)
    return share + (1 if worker < extra else 0)


@dataclass(frozen=True)
class TrialCounts:
    succeeded: int  # complete or pruned
    failed: int  # the objective raised (not stale trials of a dead worker)
    running: int
    first_error: str | None
    finished_by_worker: int = 0  # of the worker asked about

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


def count_trials(study: optuna.Study, worker: int | None = None) -> TrialCounts:
    """Finished trials count toward ``n_trials``: complete, pruned, or failed by the objective
    (a trial a dead worker left behind is failed without an error, and run again)."""
    from optuna.trial import TrialState

    succeeded = failed = running = mine = 0
    first_error = None
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            succeeded += 1
        elif trial.state == TrialState.RUNNING:
            running += 1
            continue
        elif trial.state == TrialState.FAIL and ATTR_ERROR in trial.user_attrs:
            failed += 1
            first_error = first_error or trial.user_attrs[ATTR_ERROR]
        else:
            continue
        mine += worker is not None and trial.user_attrs.get(ATTR_WORKER) == worker
    return TrialCounts(succeeded, failed, running, first_error, mine)


def finalize(
    spec: TrainingJobSpec,
    study_name: str,
    data: TrainingData,
    version_tags: dict[str, str],
) -> dict[str, Any]:
    """Refit the best configuration on all the training data, log it and register it."""
    from optuna.trial import TrialState

    estimator, _ = spec.resolved()
    study = _study(spec, study_name)
    attrs = study.user_attrs
    if ATTR_RESULT in attrs:  # a retry after the model was registered: not a second version
        return dict(attrs[ATTR_RESULT])
    fail_abandoned_trials(study)  # every search step is over: a running trial is left over
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        counts = count_trials(study)
        reason = f"; first error: {counts.first_error}" if counts.first_error else ""
        raise StepError(f"no trial completed ({counts.finished} finished){reason}")
    best = study.best_trial
    best_value = float(best.values[0])
    model = estimator.build(spec.task, best.params, seed=spec.validation.seed)
    model.fit(data.features, data.target)
    metric = spec.effective_metric
    logged = tracking.log_model(
        attrs[ATTR_PARENT_RUN],
        model,
        data.features,
        metrics={metric: best_value},
        params=best.params,
        register_as=spec.model_name,
        version_tags={
            **version_tags,
            **data.tags,
            tracking.TAG_DATASET: spec.dataset,
            tracking.TAG_DATASET_DIGEST: attrs[ATTR_DIGEST],
            tracking.TAG_METRIC: metric,
            tracking.TAG_METRIC_VALUE: repr(best_value),
        },
    )
    result = {
        "best_value": best_value,
        "best_params": best.params,
        "best_trial": best.number,
        "trials_completed": len(complete),
        "model_uri": logged.model_uri,
        "model_name": spec.model_name,
        "model_version": logged.version,
        "experiment_id": attrs[ATTR_EXPERIMENT],
        "parent_run_id": attrs[ATTR_PARENT_RUN],
        "dataset_digest": attrs[ATTR_DIGEST],
    }
    study.set_user_attr(ATTR_RESULT, result)
    tracking.finish_run(attrs[ATTR_PARENT_RUN])
    return result
