"""The identity manager: users, API keys, tokens and the bootstrap admin key.

Methods only ``flush()``; the caller's session dependency commits.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.errors import Conflict, NotFound, Unauthenticated
from mlops.core.settings import Settings
from mlops.security.credentials import (
    display_prefix,
    generate_api_key,
    hash_api_key,
    hash_password,
    issue_token,
    verify_password,
)
from mlops.security.models import ApiKey, User
from mlops.security.permissions import Role

BOOTSTRAP_KEY_NAME = "bootstrap"


class IdentityService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    async def login(self, username: str, password: str) -> tuple[str, datetime]:
        user = await self.session.scalar(select(User).where(User.username == username))
        valid = verify_password(user.password_hash if user else None, password)
        if user is None or not valid or not user.is_active:
            raise Unauthenticated("Incorrect username or password")
        return issue_token(
            user.username,
            Role(user.role),
            secret=self.settings.jwt_secret.get_secret_value(),
            algorithm=self.settings.jwt_algorithm,
            lifetime=timedelta(minutes=self.settings.jwt_expire_minutes),
        )

    async def create_user(self, username: str, password: str, role: Role) -> User:
        user = User(username=username, password_hash=hash_password(password), role=role.value)
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"A user named '{username}' already exists") from exc
        return user

    def users_query(self, role: Role | None = None) -> Select[User]:
        query = select(User).order_by(User.created_at, User.username)
        return query.where(User.role == role.value) if role else query

    async def create_api_key(
        self, name: str, role: Role, created_by: str, expires_in_days: int | None = None
    ) -> tuple[ApiKey, str]:
        key = generate_api_key()
        expires_at = (
            datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        )
        row = ApiKey(
            name=name,
            prefix=display_prefix(key),
            key_hash=hash_api_key(key),
            role=role.value,
            created_by=created_by,
            expires_at=expires_at,
        )
        self.session.add(row)
        await self.session.flush()
        return row, key

    def api_keys_query(
        self, *, role: Role | None = None, include_revoked: bool = False
    ) -> Select[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.name)
        if role:
            query = query.where(ApiKey.role == role.value)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        return query

    async def revoke_api_key(self, key_id: uuid.UUID) -> ApiKey:
        row = await self.session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"No API key with id {key_id}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            await self.session.flush()
        return row

    async def sync_bootstrap_key(self, key: str | None) -> None:
        """Make ``key`` the bootstrap admin key, or revoke the old one when none is set."""
        row = await self.session.scalar(
            select(ApiKey).where(ApiKey.is_bootstrap.is_(True)).limit(1)
        )
        if key is None:
            if row is not None and row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return
        key_hash = hash_api_key(key)
        if row is None:
            row = ApiKey(
                name=BOOTSTRAP_KEY_NAME,
                created_by="MLOPS_BOOTSTRAP_ADMIN_KEY",
                is_bootstrap=True,
                key_hash=key_hash,
                prefix=display_prefix(key),
                role=Role.ADMIN.value,
            )
            self.session.add(row)
        row.key_hash = key_hash
        row.prefix = display_prefix(key)
        row.role = Role.ADMIN.value
        row.revoked_at = None
        row.expires_at = None
        await self.session.flush()
