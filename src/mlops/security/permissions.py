"""Roles and permissions, declared here and nowhere else. Routes require permissions."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    PIPELINES_READ = "pipelines:read"
    PIPELINES_WRITE = "pipelines:write"
    TRAINING_READ = "training:read"
    TRAINING_WRITE = "training:write"
    DEPLOYMENTS_READ = "deployments:read"
    DEPLOYMENTS_WRITE = "deployments:write"
    FEATURES_READ = "features:read"
    FEATURES_WRITE = "features:write"
    MONITORING_READ = "monitoring:read"
    MONITORING_WRITE = "monitoring:write"
    RETRAINING_READ = "retraining:read"
    RETRAINING_WRITE = "retraining:write"
    AUDIT_READ = "audit:read"
    API_KEYS_MANAGE = "api_keys:manage"
    USERS_MANAGE = "users:manage"


class Role(StrEnum):
    VIEWER = "viewer"
    DATA_SCIENTIST = "data_scientist"
    ML_ENGINEER = "ml_engineer"
    ADMIN = "admin"


_READ = frozenset(p for p in Permission if p.endswith(":read") and p is not Permission.AUDIT_READ)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _READ,
    Role.DATA_SCIENTIST: _READ
    | {
        Permission.PIPELINES_WRITE,
        Permission.TRAINING_WRITE,
        Permission.FEATURES_WRITE,
    },
    Role.ML_ENGINEER: _READ
    | {
        Permission.PIPELINES_WRITE,
        Permission.TRAINING_WRITE,
        Permission.FEATURES_WRITE,
        Permission.DEPLOYMENTS_WRITE,
        Permission.MONITORING_WRITE,
        Permission.RETRAINING_WRITE,
    },
    Role.ADMIN: frozenset(Permission),
}


def permissions_of(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]


def roles_lacking(permission: Permission) -> list[Role]:
    return [role for role in Role if permission not in ROLE_PERMISSIONS[role]]
