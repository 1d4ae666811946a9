"""The domains the service is made of.

A capability is a package with ``api.py`` (exporting ``ROUTERS`` and ``TAGS``, optionally
``HOT_ROUTERS`` and ``attach_engine``) and
``models.py`` (its ORM models). Listing it here is the only change it needs outside itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fastapi import APIRouter

DOMAINS: tuple[str, ...] = (
    "mlops.security",
    "mlops.pipelines",
    "mlops.training",
    "mlops.deployments",
    "mlops.monitoring",
    "mlops.features",
    "mlops.retraining",
)


def hot_routers() -> list[APIRouter]:
    """Routers on the request hot path (predictions): the app includes them before any
    other, since FastAPI tries routes in order."""
    routers: list[APIRouter] = []
    for domain in DOMAINS:
        routers.extend(getattr(import_module(f"{domain}.api"), "HOT_ROUTERS", []))
    return routers


def domain_routers() -> list[APIRouter]:
    routers: list[APIRouter] = []
    for domain in DOMAINS:
        routers.extend(import_module(f"{domain}.api").ROUTERS)
    return routers


def domain_tags() -> list[dict[str, Any]]:
    tags: list[dict[str, Any]] = []
    for domain in DOMAINS:
        tags.extend(import_module(f"{domain}.api").TAGS)
    return tags


def attach_to_engine(engine: Any, settings: Any) -> None:
    """Let each domain that runs work on the pipeline engine (``attach_engine`` in its
    ``api.py``) register what it needs, such as hooks on its runs finishing."""
    for domain in DOMAINS:
        attach = getattr(import_module(f"{domain}.api"), "attach_engine", None)
        if attach is not None:
            attach(engine, settings)


def import_all_models() -> None:
    """Import every domain's ORM models so that ``Base.metadata`` is complete."""
    for domain in DOMAINS:
        import_module(f"{domain}.models")
