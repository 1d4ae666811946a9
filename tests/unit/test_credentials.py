from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from mlops.security.credentials import (
    InvalidToken,
    decode_token,
    generate_api_key,
    hash_api_key,
    hash_password,
    issue_token,
    verify_password,
)
from mlops.security.permissions import ROLE_PERMISSIONS, Permission, Role, roles_lacking

SECRET = "unit-test-secret-0123456789abcdefghijklmnop"


def test_password_hashes_are_argon2_and_verify() -> None:
    hashed = hash_password("a long passphrase")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "a long passphrase")
    assert not verify_password(hashed, "another passphrase")
    assert not verify_password(None, "a long passphrase")
    assert not verify_password("not-a-hash", "a long passphrase")


def test_api_keys_are_random_and_hash_stably() -> None:
    first, second = generate_api_key(), generate_api_key()
    assert first != second
    assert hash_api_key(first) == hash_api_key(first) != hash_api_key(second)
    assert len(hash_api_key(first)) == 64


def test_token_round_trip_and_expiry() -> None:
    token, _ = issue_token(
        "dana", Role.ML_ENGINEER, secret=SECRET, algorithm="HS256", lifetime=timedelta(minutes=5)
    )
    claims = decode_token(token, secret=SECRET, algorithm="HS256")
    assert (claims.subject, claims.role) == ("dana", Role.ML_ENGINEER)
    expired, _ = issue_token(
        "dana", Role.VIEWER, secret=SECRET, algorithm="HS256", lifetime=timedelta(seconds=-5)
    )
    with pytest.raises(InvalidToken, match="expired"):
        decode_token(expired, secret=SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        decode_token(token, secret=SECRET, algorithm="HS512")


def test_roles_grow_monotonically() -> None:
    order = [Role.VIEWER, Role.DATA_SCIENTIST, Role.ML_ENGINEER, Role.ADMIN]
    for lower, higher in itertools.pairwise(order):
        assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher]
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert roles_lacking(Permission.AUDIT_READ) == order[:3]
    assert roles_lacking(Permission.PIPELINES_READ) == []
