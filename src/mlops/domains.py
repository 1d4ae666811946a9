"""The domains the service is made of.

A capability is a package with ``api.py`` (exporting ``ROUTERS`` and ``TAGS``) and
``models.py`` (its ORM models). Listing it here is the only change it needs outside itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fastapi import APIRouter

DOMAINS: tuple[str, ...] = ("mlops.security", "mlops.pipelines", "mlops.training")


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


def import_all_models() -> None:
    """Import every domain's ORM models so that ``Base.metadata`` is complete."""
    for domain in DOMAINS:
        import_module(f"{domain}.models")
