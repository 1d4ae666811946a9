"""Credential primitives: argon2 password hashes, JWTs and API keys (stored as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mlops.security.permissions import Role

API_KEY_PREFIX = "mlops_"
MIN_PASSWORD_LENGTH = 12
_password_hasher = PasswordHasher()
# Verified against when a username is unknown, so that both paths cost one argon2 check.
_DUMMY_HASH = _password_hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _password_hasher.verify(password_hash or _DUMMY_HASH, password) and bool(
            password_hash
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_api_key() -> str:
    return f"{API_KEY_PREFIX}{secrets.token_urlsafe(32)}"


def hash_api_key(key: str) -> str:
    """API keys carry 256 random bits, so a fast hash suffices (no password stretching)."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(API_KEY_PREFIX) + 6]


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    role: Role
    expires_at: datetime


class InvalidToken(Exception):
    pass


def issue_token(
    subject: str, role: Role, *, secret: str, algorithm: str, lifetime: timedelta
) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    expires_at = now + lifetime
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": [role.value],
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "iss": "mlops",
    }
    return jwt.encode(claims, secret, algorithm=algorithm), expires_at


def decode_token(token: str, *, secret: str, algorithm: str) -> TokenClaims:
    """Only the configured HMAC algorithm is accepted, so ``alg: none`` never verifies."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            issuer="mlops",
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("token invalid") from exc
    roles = claims.get("roles")
    if not isinstance(roles, list) or len(roles) != 1 or roles[0] not in Role._value2member_map_:
        raise InvalidToken("token carries no valid role")
    return TokenClaims(
        subject=str(claims["sub"]),
        role=Role(roles[0]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )
