"""Request and response bodies of the auth and audit API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlops.security.credentials import MIN_PASSWORD_LENGTH
from mlops.security.permissions import Permission, Role


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_at: datetime


class Me(BaseModel):
    name: str
    kind: str
    role: Role
    permissions: list[Permission]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "ci-main", "role": "ml_engineer", "expires_in_days": 90}]
        }
    )

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\- ]*$")
    role: Role
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. It is shown once and never again.")


class UserCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"username": "alice", "password": "a long passphrase", "role": "data_scientist"}
            ]
        }
    )

    username: str = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._\-]*$")
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)
    role: Role


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    occurred_at: datetime
    request_id: str | None
    principal: str
    action: str
    resource: str
    outcome: str
    status_code: int
    client_ip: str | None
    details: dict[str, Any]
    entry_hash: str


class ChainVerdictOut(BaseModel):
    intact: bool
    checked: int
    broken_seq: int | None
    reason: str | None
