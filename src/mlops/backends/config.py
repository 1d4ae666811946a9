"""Each backend's configuration block (``MLOPS_<BACKEND>__<FIELD>``), without its SDK.

A backend is configured when its block is set; the local backend needs none. The blocks are
plain Pydantic models so that the settings can hold them without importing a client library.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

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


class WholeRunConfig(BaseModel):
    """What every backend that runs whole pipelines (Airflow, Kubeflow, Vertex AI) shares."""

    model_config = ConfigDict(extra="forbid")

    poll_seconds: float = Field(
        default=2.0, gt=0, le=300, description="How often a running run's state is fetched."
    )
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    give_up_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long a run waits out transient errors (unreachable, 5xx) before it "
        "fails with the last one as its reason.",
    )


class AirflowConfig(WholeRunConfig):
    """Pipelines as DAGs of an Apache Airflow 3 deployment (REST API v2)."""

    url: AnyHttpUrl = Field(description="Airflow's API server, e.g. http://airflow:8080.")
    username: str = Field(description="A user allowed to trigger and edit DAG runs.")
    password: SecretStr
    specs_dir: Path = Field(
        description="Where the service writes one plan per pipeline version; Airflow's "
        "dag-processor reads it as MLOPS_AIRFLOW_SPECS (a shared volume in a real deployment)."
    )
    dag_prefix: str = Field(default="mlops", pattern=r"^[A-Za-z0-9_]{1,40}$")
    verify_tls: bool = True


class KubeflowConfig(WholeRunConfig):
    """Pipelines compiled to KFP v2 specs and submitted to a Kubeflow Pipelines API."""

    host: AnyHttpUrl = Field(description="The KFP API, e.g. https://kubeflow.example.com/pipeline.")
    image: str = Field(description="An image with this service's package installed.")
    namespace: str | None = Field(default=None, description="The KFP namespace (multi-user).")
    experiment: str = Field(default="mlops", description="The experiment runs are filed under.")
    token: SecretStr | None = Field(default=None, description="A bearer token for the KFP API.")


class VertexConfig(WholeRunConfig):
    """Pipelines compiled to KFP v2 specs and submitted as Vertex AI PipelineJobs."""

    project: str = Field(description="The Google Cloud project.")
    region: str = Field(default="us-central1")
    pipeline_root: str = Field(description="A gs:// folder for the jobs' outputs.")
    image: str = Field(description="An image with this service's package installed.")
    service_account: str | None = Field(default=None, description="The jobs run as this account.")
    api_endpoint: str | None = Field(
        default=None, description="Another endpoint than REGION-aiplatform.googleapis.com."
    )
