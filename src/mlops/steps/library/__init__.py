"""The step types. Importing this package registers every one of them."""

from mlops.steps.library import (
    data_validation,
    deploy,
    feature_engineering,
    models,
    python_call,
    training,
)

__all__ = ["data_validation", "deploy", "feature_engineering", "models", "python_call", "training"]
