"""What every feature-store route depends on: permissions, the manager, shared responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from mlops.core.database import SessionDep
from mlops.features.service import FeatureStore, Stores
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

Read = Annotated[Principal, Depends(require(Permission.FEATURES_READ))]
Write = Annotated[Principal, Depends(require(Permission.FEATURES_WRITE))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such definition"}}


async def feature_store(request: Request, session: SessionDep) -> FeatureStore:
    stores: Stores = request.app.state.feature_stores
    return FeatureStore(session, stores)


StoreDep = Annotated[FeatureStore, Depends(feature_store)]
