"""The MLflow model registry as the API shows it: models, versions and aliases.

MLflow's client is synchronous; routes call these through the threadpool. MLflow errors become
the service's own: a missing model or version is a 404, an unreachable server a 503.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from mlops.core.errors import NotFound, ServiceUnavailable
from mlops.training.schemas import ModelVersionOut, RegisteredModelOut
from mlops.training.stores import import_mlflow, open_tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")
MAX_LISTED = 1000  # registries are small; beyond this the list is cut


class Registry:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    @property
    def client(self) -> MlflowClient:
        with self._translated():
            return open_tracking(self.tracking_uri)

    @contextmanager
    def _translated(self, missing: str | None = None) -> Iterator[None]:
        import_mlflow()
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException

        try:
            yield
        except MlflowException as exc:
            # a version that is no number ("abc") cannot exist either
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"} and missing:
                raise NotFound(missing) from None
            if exc.error_code in {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR"}:
                raise ServiceUnavailable(f"the MLflow registry failed: {exc.message}") from None
            raise
        except (RequestException, OSError) as exc:
            raise ServiceUnavailable(f"the MLflow registry is unreachable: {exc}") from None

    def _call(self, call: Callable[[], T], missing: str | None = None) -> T:
        with self._translated(missing):
            return call()

    def models(self) -> list[RegisteredModelOut]:
        found = self._call(
            lambda: self.client.search_registered_models(max_results=MAX_LISTED, order_by=["name"])
        )
        return [_model_out(model) for model in found]

    def model(self, name: str) -> RegisteredModelOut:
        return _model_out(
            self._call(
                lambda: self.client.get_registered_model(name), f"No registered model '{name}'"
            )
        )

    def versions(self, name: str) -> list[ModelVersionOut]:
        model = self.model(name)  # 404 for an unknown name rather than an empty list
        found = self._call(
            lambda: self.client.search_model_versions(
                f"name = '{name}'", max_results=MAX_LISTED, order_by=["version_number DESC"]
            )
        )
        versions = [_version_out(version) for version in found]
        for version in versions:  # a search does not fill in aliases; the model knows them
            version.aliases = sorted(a for a, v in model.aliases.items() if v == version.version)
        return versions

    def version(self, name: str, version: str) -> ModelVersionOut:
        return _version_out(
            self._call(
                lambda: self.client.get_model_version(name, version),
                f"Model '{name}' has no version {version}",
            )
        )

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersionOut:
        self.version(name, version)
        self._call(lambda: self.client.set_registered_model_alias(name, alias, version))
        return self.version(name, version)

    def delete_alias(self, name: str, alias: str) -> None:
        model = self.model(name)
        if alias not in model.aliases:
            raise NotFound(f"Model '{name}' has no alias '{alias}'")
        self._call(lambda: self.client.delete_registered_model_alias(name, alias))


def _when(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, UTC) if millis else None


def _model_out(model: Any) -> RegisteredModelOut:
    aliases = {str(alias): str(version) for alias, version in (model.aliases or {}).items()}
    latest = [int(v.version) for v in model.latest_versions or []]
    return RegisteredModelOut(
        name=model.name,
        description=model.description or None,
        aliases=aliases,
        latest_version=str(max(latest)) if latest else None,
        tags=dict(model.tags or {}),
        created_at=_when(model.creation_timestamp),
        updated_at=_when(model.last_updated_timestamp),
    )


def _version_out(version: Any) -> ModelVersionOut:
    return ModelVersionOut(
        name=version.name,
        version=str(version.version),
        aliases=list(version.aliases or []),
        status=version.status,
        source=version.source,
        run_id=version.run_id,
        tags=dict(version.tags or {}),
        created_at=_when(version.creation_timestamp),
    )
