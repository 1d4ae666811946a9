"""What this process serves: each deployment's loaded variants, the traffic split, and the
requests each variant answered (the canary analysis reads them).

Models are loaded once per (model, version) and shared by every deployment that serves that
version. The split comes from the database (``manager.py`` keeps it in step); a variant that is
not loaded here takes no traffic here, whatever its weight.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.core.errors import Conflict, InvalidFields, NotFound, ServiceUnavailable
from mlops.deployments.canary import WindowStats, latency_quantile
from mlops.deployments.metrics import record_prediction
from mlops.deployments.serving import PredictionFailed
from mlops.deployments.targets import ServedModel

DEFAULT_KEY_HEADER = "X-User-Id"
Enricher = Callable[[str, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
WINDOW_EVENTS = 200_000  # per variant: enough for any analysis window at a few thousand req/s


@dataclass(frozen=True, slots=True)
class ServedPrediction:
    """One request a model was asked to answer, as the prediction log keeps it."""

    request_id: str
    correlation_id: str | None
    deployment: str
    variant: str
    model_version: str
    columns: tuple[str, ...]
    rows: list[list[Any]]
    predictions: list[Any]
    latency_ms: float
    at: datetime
    error: str | None = None  # why the model failed (then no predictions)


class VariantWindow:
    """The outcome and latency of each request a variant answered, newest last."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, float, bool]] = deque(maxlen=WINDOW_EVENTS)

    def record(self, latency_ms: float, ok: bool) -> None:
        self.events.append((time.time(), latency_ms, ok))

    def since(self, moment: float) -> WindowStats:
        latencies: list[float] = []
        errors = 0
        for at, latency_ms, ok in reversed(self.events):
            if at < moment:
                break
            latencies.append(latency_ms)
            errors += not ok
        return WindowStats(
            requests=len(latencies),
            errors=errors,
            latency_p95_ms=latency_quantile(latencies, 0.95),
        )


@dataclass
class Route:
    """One deployment's split in this process: variants by cumulative weight. In an A/B test
    (``sticky``) a request with a key always lands on the same variant, in every process and
    after restarts: its place in the split is a hash of the deployment and the key."""

    variants: list[tuple[str, str, str]] = field(default_factory=list)  # name, model, version
    bounds: list[float] = field(default_factory=list)
    sticky: bool = False
    name: str = ""
    key_header: str = DEFAULT_KEY_HEADER
    feature_service: str | None = None  # completes each request's rows from the online store

    def pick(self, key: str | None = None) -> tuple[str, str, str] | None:
        if not self.variants:
            return None
        if self.sticky and key is not None:
            share = sticky_share(self.name, key) * self.bounds[-1]
        else:
            share = random.random() * self.bounds[-1]  # noqa: S311 - traffic split, not a secret
        index = bisect.bisect_right(self.bounds, share)
        return self.variants[min(index, len(self.variants) - 1)]


def sticky_share(deployment: str, key: str) -> float:
    """A number in [0, 1) fixed by the deployment and the key."""
    digest = hashlib.sha256(f"{deployment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Runtime:
    def __init__(self) -> None:
        self.models: dict[tuple[str, str], ServedModel] = {}
        self.routes: dict[str, Route] = {}
        self.windows: dict[tuple[str, str], VariantWindow] = {}  # (deployment, variant)
        # A/B predictions not written yet: request id, deployment, variant, key, when
        self.assigned: list[tuple[str, str, str, str | None, datetime]] = []
        self.on_served: Callable[[ServedPrediction], None] | None = None  # the prediction log
        # the feature store: (feature service, rows with entity keys) -> rows with features
        self.enrich: Enricher | None = None

    def key_header(self, deployment: str) -> str:
        route = self.routes.get(deployment)
        return route.key_header if route is not None else DEFAULT_KEY_HEADER

    def window(self, deployment: str, variant: str) -> VariantWindow:
        window = self.windows.get((deployment, variant))
        if window is None:
            window = self.windows[(deployment, variant)] = VariantWindow()
        return window

    def set_route(
        self,
        deployment: str,
        weights: list[tuple[str, str, str, float]],
        sticky: bool = False,
        key_header: str = DEFAULT_KEY_HEADER,
        feature_service: str | None = None,
    ) -> None:
        """``weights``: (variant, model, version, weight); only loaded variants are routed,
        in name order (so that a sticky key's place means the same variant everywhere)."""
        route = Route(
            sticky=sticky, name=deployment, key_header=key_header, feature_service=feature_service
        )
        weights = sorted(weights)
        total = 0.0
        for variant, model, version, weight in weights:
            if weight > 0 and (model, version) in self.models:
                total += weight
                route.variants.append((variant, model, version))
                route.bounds.append(total)
        self.routes[deployment] = route

    def drop_route(self, deployment: str) -> None:
        self.routes.pop(deployment, None)
        for key in [k for k in self.windows if k[0] == deployment]:
            del self.windows[key]

    async def predict(
        self,
        deployment: str,
        body: Any,
        key: str | None = None,
        request_id: str = "",
        correlation_id: str | None = None,
    ) -> tuple[str, str, list[Any]]:
        """(variant, model version, predictions) for one request; an A/B test's is recorded."""
        route = self.routes.get(deployment)
        if route is None:
            raise NotFound(f"No deployment '{deployment}' is being served (unknown, or loading)")
        chosen = route.pick(key)
        if chosen is None:
            raise Conflict(f"Deployment '{deployment}' has no healthy variant taking traffic yet")
        variant, model_name, version = chosen
        model = self.models[(model_name, version)]
        if route.feature_service is not None:
            body = await self._enriched(route.feature_service, body)
        parsed = model.parse(body)  # 422 naming the field: not the variant's fault
        started = time.perf_counter()
        predictions: list[Any] = []
        error: str | None = "cancelled"
        try:
            predictions = await model.predict(parsed)
            error = None
        except PredictionFailed as exc:
            error = exc.detail
            raise
        finally:
            latency_ms = 1000 * (time.perf_counter() - started)
            ok = error is None
            self.window(deployment, variant).record(latency_ms, ok)
            record_prediction(deployment, variant, ok, latency_ms / 1000)
            now = datetime.now(UTC)
            if self.on_served is not None:
                self.on_served(
                    ServedPrediction(
                        request_id,
                        correlation_id,
                        deployment,
                        variant,
                        version,
                        parsed.columns,
                        parsed.rows,
                        predictions,
                        latency_ms,
                        now,
                        error,
                    )
                )
        if route.sticky:
            self.assigned.append((request_id, deployment, variant, key, now))
        return variant, version, predictions

    async def _enriched(self, feature_service: str, body: Any) -> dict[str, Any]:
        if self.enrich is None:
            raise ServiceUnavailable("The feature store is not running in this process")
        if "instances" not in body:
            raise InvalidFields(
                [
                    (
                        ("body", "dataframe_split"),
                        "this deployment completes requests from a feature service: send "
                        "instances carrying the entity's join keys",
                    )
                ]
            )
        return {"instances": await self.enrich(feature_service, body["instances"])}

    async def close(self) -> None:
        for model in self.models.values():
            await model.close()
        self.models.clear()
        self.routes.clear()


__all__ = ["PredictionFailed", "Runtime", "VariantWindow"]
