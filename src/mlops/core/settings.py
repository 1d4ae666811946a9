"""Service settings: one ``BaseSettings`` read through the cached ``get_settings()``."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops.backends.config import AirflowConfig, KubeflowConfig, KubernetesConfig, VertexConfig

DEVELOPMENT_JWT_SECRET = "development-only-secret-change-me"  # noqa: S105 - refused in production
MIN_PRODUCTION_SECRET_LENGTH = 32
MIN_BOOTSTRAP_KEY_LENGTH = 24
OPTUNA_SCHEMA = "optuna"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of the service. No variable set means the embedded default."""

    model_config = SettingsConfigDict(
        env_prefix="MLOPS_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    env: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default is a SQLite file under data_dir.",
    )
    redis_url: SecretStr | None = None
    auto_migrate: bool = True
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)

    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    jwt_algorithm: str = "HS256"
    jwt_expire_minutes: int = Field(default=60, ge=1, le=24 * 60)
    bootstrap_admin_key: SecretStr | None = None
    auth_cache_seconds: float = Field(default=5.0, ge=0)

    rate_limit_enabled: bool = True
    rate_limit: str = "600/minute"
    rate_limit_anonymous: str = "60/minute"
    rate_limit_fail_open: bool = True

    pipeline_backend: str = Field(
        default="local", description="The backend of pipelines that do not name one."
    )
    local_workers: int = Field(default=2, ge=1, le=64)
    kubernetes: KubernetesConfig | None = Field(
        default=None, description="The kubernetes backend's block: MLOPS_KUBERNETES__NAMESPACE, ..."
    )
    airflow: AirflowConfig | None = Field(
        default=None, description="The airflow backend's block: MLOPS_AIRFLOW__URL, ..."
    )
    kubeflow: KubeflowConfig | None = Field(
        default=None, description="The kubeflow backend's block: MLOPS_KUBEFLOW__HOST, ..."
    )
    vertex: VertexConfig | None = Field(
        default=None, description="The vertex backend's block: MLOPS_VERTEX__PROJECT, ..."
    )
    artifact_root: str | None = Field(
        default=None, description="Local folder or fsspec URI; default: data_dir/artifacts."
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLOPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="An MLflow server; default: a SQLite store under data_dir/mlflow.",
    )

    mlflow_http_timeout_seconds: int = Field(
        default=30,
        ge=1,
        validation_alias=AliasChoices(
            "MLOPS_MLFLOW_HTTP_TIMEOUT_SECONDS", "MLFLOW_HTTP_REQUEST_TIMEOUT"
        ),
        description="Per request to an MLflow server (MLflow's own default: 120).",
    )
    mlflow_http_max_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        validation_alias=AliasChoices(
            "MLOPS_MLFLOW_HTTP_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
        ),
        description=(
            "Retries of a failed request to an MLflow server, with exponential backoff; MLflow's "
            "default of 7 keeps a caller waiting minutes when the server is down."
        ),
    )

    prediction_log_enabled: bool = Field(
        default=True, description="Record every prediction served (rows, answer, latency)."
    )
    prediction_log_retention_days: int = Field(
        default=30, ge=1, le=3650, description="Logged predictions older than this are deleted."
    )

    quality_refresh_seconds: float = Field(
        default=300.0,
        ge=1.0,
        description="How often model quality is scored for Prometheus (mlops_model_quality).",
    )
    alert_evaluation_seconds: float = Field(
        default=30.0, ge=1.0, description="How often alert rules are evaluated (one process)."
    )
    retraining_evaluation_seconds: float = Field(
        default=30.0,
        ge=0.5,
        description="How often one process evaluates retraining triggers and moves retrainings "
        "along (also at once when a monitoring alert fires).",
    )
    drift_max_window_rows: int = Field(
        default=200_000,
        ge=100,
        description="Logged requests a drift report or reference reads from a window at most.",
    )

    feature_offline_root: str | None = Field(
        default=None,
        description="Where the offline feature store keeps its Parquet files (a local folder or "
        "fsspec URI); default: data_dir/features. Every replica and step must see the same one.",
    )
    feature_schedule_seconds: float = Field(
        default=30.0,
        ge=1.0,
        description="How often one process materializes scheduled feature views and refreshes "
        "the feature store's metrics.",
    )
    feature_definitions_cache_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=300.0,
        description="How long a replica answers online reads from its copy of a feature "
        "service's definition before reading it again (changes made here apply at once).",
    )

    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("jwt_algorithm")
    @classmethod
    def _symmetric_algorithm(cls, value: str) -> str:
        if value not in {"HS256", "HS384", "HS512"}:
            raise ValueError("jwt_algorithm must be one of HS256, HS384, HS512")
        return value

    @field_validator("rate_limit", "rate_limit_anonymous")
    @classmethod
    def _parseable_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '100/minute': {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.env is not Environment.PRODUCTION:
            return self
        secret = self.jwt_secret.get_secret_value()
        if secret == DEVELOPMENT_JWT_SECRET or len(secret) < MIN_PRODUCTION_SECRET_LENGTH:
            raise ValueError(
                "MLOPS_JWT_SECRET must be set to a random value of at least "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters when MLOPS_ENV=production"
            )
        key = self.bootstrap_admin_key
        if key is not None and len(key.get_secret_value()) < MIN_BOOTSTRAP_KEY_LENGTH:
            raise ValueError(
                f"MLOPS_BOOTSTRAP_ADMIN_KEY must be at least {MIN_BOOTSTRAP_KEY_LENGTH} "
                "characters when MLOPS_ENV=production"
            )
        return self

    @model_validator(mode="after")
    def _default_backend_is_usable(self) -> Settings:
        from mlops.backends import backend_problem

        problem = backend_problem(self.pipeline_backend, self)
        if problem:
            raise ValueError(f"MLOPS_PIPELINE_BACKEND: {problem}")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mlops.db').as_posix()}"

    @property
    def effective_artifact_root(self) -> str:
        return self.artifact_root or str((self.data_dir / "artifacts").resolve())

    @property
    def effective_mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve().as_posix()}"

    @property
    def optuna_storage_url(self) -> str:
        """Optuna's RDB storage, synchronous, beside the service's tables: a schema of its own
        on Postgres, a sibling file on SQLite (both keep an ``alembic_version`` table)."""
        url = self.effective_database_url
        if url.startswith("sqlite"):
            return f"sqlite:///{(self.data_dir / 'optuna.db').resolve().as_posix()}"
        driver, _, rest = url.partition("://")
        sync = f"postgresql+psycopg://{rest}" if driver.startswith("postgres") else url
        return f"{sync}{'&' if '?' in sync else '?'}options=-csearch_path%3D{OPTUNA_SCHEMA}"

    def step_environment(self) -> dict[str, str]:
        """What step processes need to reach the service's stores (never passed as params,
        which are stored and shown: URLs may hold passwords)."""
        environment = {
            "MLOPS_OPTUNA_STORAGE": self.optuna_storage_url,
            "MLOPS_MLFLOW_TRACKING_URI": self.effective_mlflow_uri,
            "MLOPS_DATA_DIR": str(self.data_dir.resolve()),
            "MLOPS_FEATURE_OFFLINE_ROOT": self.effective_feature_offline_root,
        }
        if self.database_url:  # else the embedded file under MLOPS_DATA_DIR
            environment["MLOPS_DATABASE_URL"] = self.database_url
        return environment | self.mlflow_client_environment()

    @property
    def effective_feature_offline_root(self) -> str:
        return self.feature_offline_root or str((self.data_dir / "features").resolve())

    def mlflow_client_environment(self) -> dict[str, str]:
        """MLflow's HTTP client reads its timeout and retries from the environment only."""
        return {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.mlflow_http_timeout_seconds),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.mlflow_http_max_retries),
        }

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def redis_dsn(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def app_settings(request: Request) -> Settings:
    """The settings the running app was built with (tests build apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


def describe_settings_error(error: ValidationError) -> str:
    """The problems in the environment, naming each variable but never echoing a value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        names = [f"MLOPS_{str(part).upper()}" for part in item["loc"] if part != "__root__"]
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{', '.join(names)}: {message}" if names else message)
    return "invalid settings:\n  " + "\n  ".join(lines)
