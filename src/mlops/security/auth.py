"""Authentication and authorization dependencies.

``get_principal`` accepts an ``X-API-Key`` header or a bearer JWT, then counts the request
against the principal's rate limit. ``require(permission)`` guards a route by permission,
never by role name; the OpenAPI walk test reads the permission back from the route.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select

from mlops.core.database import Database
from mlops.core.errors import PermissionDenied, Unauthenticated
from mlops.core.settings import Settings
from mlops.security.credentials import InvalidToken, decode_token, hash_api_key
from mlops.security.models import ApiKey
from mlops.security.permissions import Permission, Role
from mlops.security.principal import Principal
from mlops.security.ratelimit import RateLimiter

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
    "OAuth2": {
        "type": "oauth2",
        "description": "A JWT from POST /api/v1/auth/token.",
        "flows": {"password": {"tokenUrl": "/api/v1/auth/token", "scopes": {}}},
    },
}

_CACHE_SIZE = 10_000


class Authenticator:
    """Resolves credentials to principals; API-key lookups are cached for a few seconds."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.secret = settings.jwt_secret.get_secret_value()
        self.algorithm = settings.jwt_algorithm
        self.cache_seconds = settings.auth_cache_seconds
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def forget(self, key_hash: str) -> None:
        self._cache.pop(key_hash, None)

    async def from_api_key(self, key: str) -> Principal:
        key_hash = hash_api_key(key)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._load_api_key(key_hash)
            if self.cache_seconds > 0:
                self._cache[key_hash] = (now + self.cache_seconds, principal)
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise Unauthenticated("API key expired")
        return principal

    async def _load_api_key(self, key_hash: str) -> Principal:
        async with self.database.sessionmaker() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("Invalid API key")
        return Principal.of(f"{row.name}/{row.id}", "api_key", Role(row.role), row.expires_at)

    def from_token(self, token: str) -> Principal:
        try:
            claims = decode_token(token, secret=self.secret, algorithm=self.algorithm)
        except InvalidToken as exc:
            raise Unauthenticated(f"Bearer {exc}") from exc
        return Principal.of(claims.subject, "user", claims.role, claims.expires_at)


async def count_anonymous_request(request: Request) -> None:
    """Count a request against its client IP's anonymous budget."""
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        client = request.client.host if request.client else "unknown"
        request.state.rate_limit = await limiter.hit(f"ip:{client}", anonymous=True)


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def get_principal(request: Request) -> Principal:
    """The caller, from ``X-API-Key`` or a bearer JWT.

    Headers are read directly rather than through ``Security(...)`` sub-dependencies, which
    FastAPI would solve on every request; the OpenAPI schema declares both schemes instead
    (``SECURITY_SCHEMES``, applied in ``core/openapi.py``).
    """
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:  # a second dependency on the caller: counted once
        return known
    api_key = request.headers.get("x-api-key")
    token = _bearer_token(request.headers.get("authorization"))
    state = request.app.state
    authenticator: Authenticator = state.authenticator
    limiter: RateLimiter | None = state.rate_limiter
    try:
        if api_key:
            principal = await authenticator.from_api_key(api_key)
        elif token:
            principal = authenticator.from_token(token)
        else:
            raise Unauthenticated("Send an X-API-Key header or an Authorization: Bearer token")
    except Unauthenticated:
        # Failed attempts spend the caller's anonymous budget: brute force meets a 429.
        await count_anonymous_request(request)
        raise
    request.state.principal = principal
    if limiter is not None:
        request.state.rate_limit = await limiter.hit(principal.rate_limit_bucket, anonymous=False)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


class RequirePermission:
    """A dependency that admits principals holding ``permission``."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Principal:
        # get_principal called here rather than declared as a sub-dependency: one level less
        # for FastAPI to solve on every request
        principal = await get_principal(request)
        if self.permission not in principal.permissions:
            raise PermissionDenied(
                f"Role '{principal.role}' lacks the permission '{self.permission}'"
            )
        return principal


def require(permission: Permission) -> RequirePermission:
    return RequirePermission(permission)
