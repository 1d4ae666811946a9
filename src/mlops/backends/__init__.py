"""Orchestrator backends: one module each, behind ``base.OrchestratorBackend``.

Each backend is a flavor: a name, a lazily imported implementation (an unused backend's SDK is
never loaded) and, unless it needs none, the settings block that configures it. A pipeline may
only name a backend that is configured on this service.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from mlops.backends.base import (
    CACHE,
    LOGS,
    BackendHealth,
    OrchestratorBackend,
    ResultSink,
    RunOrchestrator,
)

CAPABILITY_NAMES = {LOGS: "step logs", CACHE: "step caching"}


@dataclass(frozen=True)
class Flavor:
    name: str
    implementation: str  # "module:Class"
    summary: str
    settings_block: str | None = None  # the Settings field holding its configuration
    # Whole-run backends (``base.RunOrchestrator``) schedule the steps themselves.
    whole_run: bool = False
    capabilities: frozenset[str] = frozenset({LOGS, CACHE})

    def not_supported(self, capability: str) -> str:
        return f"{CAPABILITY_NAMES[capability]} is not supported by the {self.name!r} backend"

    def configured(self, settings: Any) -> bool:
        return self.settings_block is None or getattr(settings, self.settings_block) is not None

    @property
    def how_to_configure(self) -> str:
        if self.settings_block is None:
            return "nothing to configure"
        return f"set MLOPS_{self.settings_block.upper()}__* (see the README)"

    def implementation_class(self) -> Any:
        module_name, class_name = self.implementation.split(":")
        return getattr(import_module(module_name), class_name)


# A backend not listed here does not exist.
FLAVORS: dict[str, Flavor] = {
    flavor.name: flavor
    for flavor in (
        Flavor(
            "local",
            "mlops.backends.local:LocalBackend",
            "A bounded pool of worker processes on the service's machine.",
        ),
        Flavor(
            "kubernetes",
            "mlops.backends.kubernetes:KubernetesBackend",
            "Each step attempt a batch/v1 Job in one namespace of a cluster.",
            settings_block="kubernetes",
        ),
        Flavor(
            "airflow",
            "mlops.backends.airflow:AirflowBackend",
            "Each run a DAG run of an Apache Airflow 3 deployment.",
            settings_block="airflow",
            whole_run=True,
            capabilities=frozenset({LOGS}),
        ),
        Flavor(
            "kubeflow",
            "mlops.backends.kubeflow:KubeflowBackend",
            "Each run a Kubeflow Pipelines run of the pipeline compiled to a KFP v2 spec.",
            settings_block="kubeflow",
            whole_run=True,
            capabilities=frozenset(),
        ),
        Flavor(
            "vertex",
            "mlops.backends.vertex:VertexBackend",
            "Each run a Vertex AI PipelineJob of the pipeline compiled to a KFP v2 spec.",
            settings_block="vertex",
            whole_run=True,
            capabilities=frozenset(),
        ),
    )
}


class UnknownBackend(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown backend {name!r}; valid: {', '.join(sorted(FLAVORS))}")


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(FLAVORS))


def configured_backends(settings: Any) -> tuple[str, ...]:
    return tuple(name for name in sorted(FLAVORS) if FLAVORS[name].configured(settings))


def backend_problem(name: str, settings: Any) -> str | None:
    """Why a pipeline cannot run on ``name`` here, or None when it can."""
    flavor = FLAVORS.get(name)
    if flavor is None:
        return f"unknown backend {name!r}; valid: {', '.join(sorted(FLAVORS))}"
    if not flavor.configured(settings):
        return (
            f"backend {name!r} is not configured on this service ({flavor.how_to_configure}); "
            f"configured: {', '.join(configured_backends(settings))}"
        )
    return None


def is_whole_run(name: str) -> bool:
    flavor = FLAVORS.get(name)
    return flavor is not None and flavor.whole_run


def whole_run_backends() -> tuple[str, ...]:
    return tuple(name for name in sorted(FLAVORS) if FLAVORS[name].whole_run)


def _flavor(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise UnknownBackend(name) from None


def create_backend(name: str, sink: ResultSink, settings: Any) -> OrchestratorBackend:
    backend: OrchestratorBackend = _flavor(name).implementation_class()(
        sink=sink, settings=settings
    )
    return backend


def create_run_orchestrator(name: str, settings: Any) -> RunOrchestrator:
    orchestrator: RunOrchestrator = _flavor(name).implementation_class()(settings=settings)
    return orchestrator


async def check_health(name: str, settings: Any) -> BackendHealth:
    """Whether ``name`` can run steps now, asked of its implementation (not of a running
    instance: this process may not be the one running the engine)."""
    flavor = FLAVORS[name]
    if not flavor.configured(settings):
        return BackendHealth(ok=False, detail=f"not configured: {flavor.how_to_configure}")
    try:
        backend_class: Any = flavor.implementation_class()
        health: BackendHealth = await backend_class.check_health(settings)
    except Exception as exc:  # a probe must answer, whatever the backend raises
        return BackendHealth(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return health
