"""Orchestrator backends: one module each, behind ``base.OrchestratorBackend``.

Backends are imported lazily by name, so an unused backend's SDK is never loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mlops.backends.base import OrchestratorBackend, ResultSink

# name -> "module:class"; a backend not listed here does not exist.
BACKENDS: dict[str, str] = {"local": "mlops.backends.local:LocalBackend"}


class UnknownBackend(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown backend {name!r}; valid: {', '.join(sorted(BACKENDS))}")


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(BACKENDS))


def create_backend(name: str, sink: ResultSink, settings: Any) -> OrchestratorBackend:
    try:
        module_name, class_name = BACKENDS[name].split(":")
    except KeyError:
        raise UnknownBackend(name) from None
    backend_class = getattr(import_module(module_name), class_name)
    backend: OrchestratorBackend = backend_class(sink=sink, settings=settings)
    return backend
