"""The Kubernetes backend's Job manifests, result parsing and configuration block."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from mlops.backends.base import StepTask
from mlops.backends.config import KubernetesConfig
from mlops.backends.kubernetes import job_manifest, job_name, split_result

K8S_VERSION = "1.30"  # the kubernetes client 30.x speaks this API


def task(**changes: Any) -> StepTask:
    values: dict[str, Any] = {
        "task_id": "0f8e4c2a-7b1d-4e5f-9a3c-2d6b8e1f4a7c:2",
        "run_id": "5d0c8b6e-1a2f-4c3d-8e9f-0a1b2c3d4e5f",
        "step": "Train model #1",
        "type": "python",
        "attempt": 2,
        "params": {"callable": "mlops.steps.library.testing:echo", "kwargs": {"x": 1}},
        "timeout_seconds": 90.5,
        "artifact_root": "s3://bucket/artifacts",
        "work_dir": "/var/lib/mlops/work",
        "log_path": "/var/lib/mlops/logs/x.log",
    }
    values.update(changes)
    return StepTask(**values)


def config(**changes: Any) -> KubernetesConfig:
    return KubernetesConfig.model_validate({"namespace": "ml", "image": "mlops:1.0", **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"service_account": "steps", "env_from_secret": "mlops-stores", "cpu_limit": "2"},
        {"memory_limit": None, "cpu_request": "1.5", "memory_request": "4Gi"},
    ],
)
def test_job_manifests_pass_strict_schema_validation(changes: dict[str, Any]) -> None:
    manifest = job_manifest(task(), config(**changes))
    assert kubernetes_validate.validate(manifest, K8S_VERSION, strict=True) == K8S_VERSION


def test_a_job_carries_the_attempt_its_policy_and_the_entrypoint() -> None:
    manifest = job_manifest(task(), config(env_from_secret="mlops-stores"))
    assert (
        manifest["metadata"]["name"]
        == job_name(task())
        == ("mlops-0f8e4c2a7b1d4e5f9a3c2d6b8e1f4a7c-2")
    )
    assert len(manifest["metadata"]["name"]) <= 63
    assert manifest["metadata"]["namespace"] == "ml"
    labels = manifest["metadata"]["labels"]
    assert labels == manifest["spec"]["template"]["metadata"]["labels"]
    assert labels["mlops.io/run-id"] == task().run_id
    assert labels["mlops.io/step"] == "Train-model--1"  # a valid label value
    assert manifest["metadata"]["annotations"]["mlops.io/step"] == "Train model #1"
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0  # retries are the engine's: one Job per attempt
    assert spec["activeDeadlineSeconds"] == 91  # the step's timeout, rounded up
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "mlops.steps", "run"]
    args = container["args"]
    assert args[args.index("--type") + 1] == "python"
    assert json.loads(args[args.index("--params") + 1]) == task().params
    assert args[args.index("--attempt") + 1] == "2"
    assert args[args.index("--artifact-root") + 1] == "s3://bucket/artifacts"
    assert container["envFrom"] == [{"secretRef": {"name": "mlops-stores"}}]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }
    # nothing of the service's own environment (store URLs may hold passwords)
    assert [e["name"] for e in container["env"]] == ["PYTHONUNBUFFERED"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namespace", "ML_Team"),
        ("cpu_request", "half"),
        ("memory_limit", "2 GB"),
        ("image_pull_policy", "Sometimes"),
        ("max_parallel_jobs", 0),
    ],
)
def test_the_configuration_block_names_a_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        config(**{field: value})
    assert raised.value.errors()[0]["loc"] == (field,)


def test_the_result_is_the_last_json_line_with_ok() -> None:
    log = (
        'INFO step: starting\n{"not": "a result"}\nprinted {"ok": true} inline\n'
        '{"ok": true, "outputs": {"x": 1}, "digests": {}}\nWARNING at exit\n'
    )
    result, rest = split_result(log)
    assert result == {"ok": True, "outputs": {"x": 1}, "digests": {}}
    assert rest == (
        'INFO step: starting\n{"not": "a result"}\nprinted {"ok": true} inline\nWARNING at exit\n'
    )
    assert split_result("Traceback ...\nKilled\n") == (None, "Traceback ...\nKilled\n")
