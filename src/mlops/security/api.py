"""Routes of identity (tokens, API keys, users) and of the audit log: one service call each."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from mlops.core.database import SessionDep
from mlops.core.pagination import Page, PageDep, paginate
from mlops.core.settings import SettingsDep
from mlops.security.audit import verify_chain
from mlops.security.audit_query import AuditFilter, audit_query
from mlops.security.auth import Authenticator, PrincipalDep, count_anonymous_request, require
from mlops.security.permissions import Permission, Role
from mlops.security.principal import Principal
from mlops.security.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AuditEntryOut,
    ChainVerdictOut,
    Me,
    TokenResponse,
    UserCreate,
    UserOut,
)
from mlops.security.service import IdentityService

auth_router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
audit_router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

ManageKeys = Annotated[Principal, Depends(require(Permission.API_KEYS_MANAGE))]
ManageUsers = Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]
ReadAudit = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]


@auth_router.post(
    "/token",
    summary="Exchange a username and password for a JWT (OAuth2 password flow)",
    response_model=TokenResponse,
    responses={401: {"description": "Incorrect username or password"}},
)
async def issue_token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenResponse:
    request.state.audit_details = {"username": form.username}
    await count_anonymous_request(request)
    token, expires_at = await IdentityService(session, settings).login(form.username, form.password)
    return TokenResponse(access_token=token, expires_at=expires_at)


@auth_router.get(
    "/me", summary="The calling principal, its role and permissions", response_model=Me
)
async def me(principal: PrincipalDep) -> Me:
    return Me(
        name=principal.name,
        kind=principal.kind,
        role=principal.role,
        permissions=sorted(principal.permissions),
    )


@auth_router.post(
    "/api-keys",
    summary="Create an API key (shown once)",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
)
async def create_api_key(
    body: ApiKeyCreate, principal: ManageKeys, session: SessionDep, settings: SettingsDep
) -> ApiKeyCreated:
    row, key = await IdentityService(session, settings).create_api_key(
        body.name, body.role, principal.name, body.expires_in_days
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), key=key)


@auth_router.get("/api-keys", summary="List API keys", response_model=Page[ApiKeyOut])
async def list_api_keys(
    _: ManageKeys,
    session: SessionDep,
    settings: SettingsDep,
    page: PageDep,
    role: Annotated[Role | None, Query(description="Only keys of this role.")] = None,
    include_revoked: Annotated[bool, Query(description="Include revoked keys.")] = False,
) -> Page[ApiKeyOut]:
    query = IdentityService(session, settings).api_keys_query(
        role=role, include_revoked=include_revoked
    )
    return await paginate(session, query, page, ApiKeyOut)


@auth_router.delete(
    "/api-keys/{key_id}",
    summary="Revoke an API key",
    response_model=ApiKeyOut,
    responses={404: {"description": "No such key"}},
)
async def revoke_api_key(
    key_id: uuid.UUID,
    request: Request,
    _: ManageKeys,
    session: SessionDep,
    settings: SettingsDep,
) -> ApiKeyOut:
    row = await IdentityService(session, settings).revoke_api_key(key_id)
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget(row.key_hash)
    return ApiKeyOut.model_validate(row)


@auth_router.post(
    "/users",
    summary="Create a user who signs in with a password",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={409: {"description": "The username is taken"}},
)
async def create_user(
    body: UserCreate, _: ManageUsers, session: SessionDep, settings: SettingsDep
) -> UserOut:
    user = await IdentityService(session, settings).create_user(
        body.username, body.password, body.role
    )
    return UserOut.model_validate(user)


@auth_router.get("/users", summary="List users", response_model=Page[UserOut])
async def list_users(
    _: ManageUsers,
    session: SessionDep,
    settings: SettingsDep,
    page: PageDep,
    role: Annotated[Role | None, Query(description="Only users of this role.")] = None,
) -> Page[UserOut]:
    query = IdentityService(session, settings).users_query(role)
    return await paginate(session, query, page, UserOut)


@audit_router.get(
    "",
    summary="The audit log, newest first, filtered and paginated",
    response_model=Page[AuditEntryOut],
)
async def list_audit_entries(
    _: ReadAudit, session: SessionDep, page: PageDep, filters: Annotated[AuditFilter, Query()]
) -> Page[AuditEntryOut]:
    return await paginate(session, audit_query(filters), page, AuditEntryOut)


@audit_router.get(
    "/verify",
    summary="Check the audit chain and name the first broken entry",
    response_model=ChainVerdictOut,
)
async def verify_audit_chain(_: ReadAudit, session: SessionDep) -> ChainVerdictOut:
    verdict = await verify_chain(session)
    return ChainVerdictOut(
        intact=verdict.intact,
        checked=verdict.checked,
        broken_seq=verdict.broken_seq,
        reason=verdict.reason,
    )


ROUTERS = [auth_router, audit_router]
TAGS = [
    {"name": "auth", "description": "Tokens, API keys and users."},
    {"name": "audit", "description": "The tamper-evident audit log."},
]
