"""The step library: the one implementation of pipeline steps.

Importing this package registers every step type. Run a step with
``python -m mlops.steps run --type T --params JSON ...`` or serve tasks with
``python -m mlops.steps worker``; in-process, call ``execute_step``.
"""

from mlops.steps import library  # importing it registers every step type
from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import (
    STEP_LIBRARY_VERSION,
    StepContext,
    StepError,
    StepType,
    UnknownStepType,
    artifact_digests,
    describe_step_types,
    execute_step,
    get_step_type,
    register_step_type,
    step_types,
    validate_params,
)

__all__ = [
    "STEP_LIBRARY_VERSION",
    "ArtifactStore",
    "StepContext",
    "StepError",
    "StepType",
    "UnknownStepType",
    "artifact_digests",
    "describe_step_types",
    "execute_step",
    "get_step_type",
    "library",
    "register_step_type",
    "step_types",
    "validate_params",
]
