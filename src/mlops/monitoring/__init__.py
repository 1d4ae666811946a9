"""Monitoring: drift detection of a deployment's current data against a reference profile
stored once (``profiles.py``), compared window by window (``drift.py``)."""

from mlops.monitoring.drift import DriftReport, FeatureDrift, Histogram, compare
from mlops.monitoring.features import FeatureSpec, ProfileError, infer_specs
from mlops.monitoring.profiles import ReferenceProfile
from mlops.monitoring.thresholds import DriftError, DriftThresholds, Thresholds

__all__ = [
    "DriftError",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "FeatureSpec",
    "Histogram",
    "ProfileError",
    "ReferenceProfile",
    "Thresholds",
    "compare",
    "infer_specs",
]
