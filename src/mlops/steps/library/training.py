"""Training step types: the three phases of a training job, and ``train`` for pipelines."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mlops.steps.datasets import save_dataset
from mlops.steps.framework import StepContext, StepType, register_step_type
from mlops.training import runner, tracking
from mlops.training.spec import TrainingJobSpec
from mlops.training.tracking import TAG_JOB, TAG_RUN


class JobPhaseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1)
    job: TrainingJobSpec
    worker: int = Field(default=0, ge=0, description="Which of the job's search workers.")


def job_study(job_id: str) -> str:
    return f"job-{job_id}"


def job_experiment(job_id: str) -> str:
    return f"training-job-{job_id}"


def _job_tags(context: StepContext, params: JobPhaseParams) -> dict[str, str]:
    return {TAG_JOB: params.job_id, TAG_RUN: context.run_id}


@register_step_type
class TrainingPrepare(StepType):
    name: ClassVar[str] = "training_prepare"
    Params: ClassVar[type[BaseModel]] = JobPhaseParams
    outputs: ClassVar[tuple[str, ...]] = (
        "study",
        "experiment_id",
        "parent_run_id",
        "dataset_digest",
    )
    description: ClassVar[str] = (
        "First phase of a training job: check the data, create the Optuna study and the MLflow "
        "experiment and parent run."
    )

    def run(self, context: StepContext, params: JobPhaseParams) -> dict[str, Any]:
        data = runner.training_data(params.job, context.artifacts)
        return runner.prepare(
            params.job,
            job_study(params.job_id),
            job_experiment(params.job_id),
            data,
            _job_tags(context, params),
        )


@register_step_type
class TrainingSearch(StepType):
    name: ClassVar[str] = "training_search"
    Params: ClassVar[type[BaseModel]] = JobPhaseParams
    outputs: ClassVar[tuple[str, ...]] = ("trials_run",)
    description: ClassVar[str] = (
        "One search worker of a training job: takes trials from the job's shared Optuna study "
        "until it has its trials or its time is up."
    )

    def run(self, context: StepContext, params: JobPhaseParams) -> dict[str, Any]:
        data = runner.training_data(params.job, context.artifacts)
        ran = runner.search(params.job, job_study(params.job_id), data, params.worker)
        return {"trials_run": ran}


@register_step_type
class TrainingFinalize(StepType):
    name: ClassVar[str] = "training_finalize"
    Params: ClassVar[type[BaseModel]] = JobPhaseParams
    outputs: ClassVar[tuple[str, ...]] = (
        "best_value",
        "best_params",
        "best_trial",
        "trials_completed",
        "model_uri",
        "model_name",
        "model_version",
        "experiment_id",
        "parent_run_id",
        "dataset_digest",
    )
    description: ClassVar[str] = (
        "Last phase of a training job: refit the best configuration on all the training data, "
        "log it to MLflow with its signature and register it."
    )

    def run(self, context: StepContext, params: JobPhaseParams) -> dict[str, Any]:
        data = runner.training_data(params.job, context.artifacts)
        return runner.finalize(
            params.job, job_study(params.job_id), data, _job_tags(context, params)
        )


class TrainParams(TrainingJobSpec):
    test_size: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Kept out of the search and written as test_dataset for an evaluate step.",
    )


@register_step_type
class Train(StepType):
    name: ClassVar[str] = "train"
    Params: ClassVar[type[BaseModel]] = TrainParams
    outputs: ClassVar[tuple[str, ...]] = (*TrainingFinalize.outputs, "test_dataset")
    description: ClassVar[str] = (
        "A whole training job as one step: hyperparameter search (Optuna, tracked in MLflow), "
        "the best configuration refitted and logged, registered when model_name is set; a "
        "test split is kept out and written as test_dataset."
    )

    def run(self, context: StepContext, params: TrainParams) -> dict[str, Any]:
        from sklearn.model_selection import train_test_split

        from mlops.steps.datasets import load_dataset
        from mlops.training.catalogue import Task

        frame = load_dataset(params.dataset, context.artifacts)
        lineage = runner.feature_tags(frame)  # before the split, which may not keep attrs
        test_uri = None
        if params.test_size > 0:
            runner.split_frame(
                frame, params.target, params.task, params.dataset, params.feature_columns
            )
            stratify = frame[params.target] if params.task is Task.CLASSIFICATION else None
            frame, test = train_test_split(
                frame,
                test_size=params.test_size,
                random_state=params.validation.seed,
                stratify=stratify,
            )
            test_uri = save_dataset(test, context.output_uri("test.parquet"), context.artifacts)
        data = runner.split_frame(
            frame, params.target, params.task, params.dataset, params.feature_columns
        )
        data = dataclasses.replace(data, tags=lineage)
        study = f"step-{context.run_id}-{context.step_name}"
        tags = {TAG_RUN: context.run_id}
        experiment = f"pipeline-{context.run_id}-{context.step_name}"
        prepared = runner.prepare(params, study, experiment, data, tags)
        try:
            with ThreadPoolExecutor(params.parallelism) as pool:  # list() re-raises a failure
                workers = range(params.parallelism)
                list(pool.map(lambda w: runner.search(params, study, data, w), workers))
            final = runner.finalize(params, study, data, tags)
        except BaseException:
            tracking.finish_run(prepared["parent_run_id"], "FAILED")
            raise
        return {**final, "test_dataset": test_uri}
