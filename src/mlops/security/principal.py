"""Who is calling: the principal every authenticated request carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mlops.security.permissions import Permission, Role, permissions_of


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str  # "user" or "api_key"
    role: Role
    expires_at: datetime | None = None
    permissions: frozenset[Permission] = field(default=frozenset())

    @classmethod
    def of(cls, name: str, kind: str, role: Role, expires_at: datetime | None = None) -> Principal:
        return cls(name, kind, role, expires_at, permissions_of(role))

    @property
    def rate_limit_bucket(self) -> str:
        return f"{self.kind}:{self.name}"
