"""Each backend's configuration block (``MLOPS_<BACKEND>__<FIELD>``), without its SDK.

A backend is configured when its block is set; the local backend needs none. The blocks are
plain Pydantic models so that the settings can hold them without importing a client library.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Kubernetes quantities: "500m", "2", "1.5", "512Mi", "4Gi", "1e3"...
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class KubernetesConfig(BaseModel):
    """Step attempts as ``batch/v1`` Jobs in one namespace of a cluster."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(description="Where the step Jobs are created.")
    image: str = Field(
        description="An image with this service's package installed (it runs `python -m "
        "mlops.steps run`)."
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="A kubeconfig file; default: in-cluster credentials inside a pod, "
        "otherwise ~/.kube/config.",
    )
    context: str | None = Field(default=None, description="The kubeconfig context to use.")
    service_account: str | None = None
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = "2Gi"
    env_from_secret: str | None = Field(
        default=None,
        description="A Secret whose keys become the steps' environment (store URLs, keys): "
        "never put in the Job itself.",
    )
    instance: str = Field(
        default="mlops",
        description="Labels this service's Jobs: another service in the same namespace needs "
        "another value (on start, a service stops the running Jobs it labelled before).",
    )
    ttl_seconds_after_finished: int = Field(default=3600, ge=0)
    max_parallel_jobs: int = Field(default=20, ge=1, le=10_000)

    @field_validator("namespace", "service_account", "env_from_secret", "instance")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes name (lowercase a-z, 0-9 and '-')")
        return value

    @field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 2 or 1Gi")
        return value
