from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops.core.settings import DEVELOPMENT_JWT_SECRET, Settings


def test_embedded_default_needs_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("MLOPS_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.effective_database_url == "sqlite+aiosqlite:///data/mlops.db"
    assert settings.redis_dsn is None
    assert settings.is_sqlite
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_variables_select_postgres_and_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_DATABASE_URL", "postgresql+asyncpg://u@db:5432/mlops")
    monkeypatch.setenv("MLOPS_REDIS_URL", "redis://cache:6379/0")
    settings = Settings()
    assert not settings.is_sqlite
    assert settings.redis_dsn == "redis://cache:6379/0"
    assert "cache:6379" not in repr(settings)  # secrets are masked in reprs and logs


@pytest.mark.parametrize("secret", [None, DEVELOPMENT_JWT_SECRET, "short-secret"])
def test_production_refuses_default_or_short_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    monkeypatch.setenv("MLOPS_ENV", "production")
    if secret is None:
        monkeypatch.delenv("MLOPS_JWT_SECRET", raising=False)
    else:
        monkeypatch.setenv("MLOPS_JWT_SECRET", secret)
    with pytest.raises(ValidationError, match="MLOPS_JWT_SECRET"):
        Settings()


def test_production_accepts_a_long_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_ENV", "production")
    monkeypatch.setenv("MLOPS_JWT_SECRET", "x" * 40)
    assert Settings().env == "production"
    monkeypatch.setenv("MLOPS_BOOTSTRAP_ADMIN_KEY", "too-short")
    with pytest.raises(ValidationError, match="MLOPS_BOOTSTRAP_ADMIN_KEY"):
        Settings()


@pytest.mark.parametrize(
    ("field", "value"), [("rate_limit", "lots"), ("jwt_algorithm", "none"), ("port", "0")]
)
def test_bad_values_name_the_field(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(f"MLOPS_{field.upper()}", value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_data_dir_is_configurable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.effective_database_url.endswith(f"{tmp_path.as_posix()}/mlops.db")
