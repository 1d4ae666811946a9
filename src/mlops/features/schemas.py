"""Request and response bodies of the feature store: entities, feature views and services."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
RESERVED_COLUMNS = frozenset({"event_timestamp", "created_timestamp"})

KeyType = Literal["int64", "string"]
FeatureType = Literal["int64", "float64", "string", "bool"]


class JoinKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FIELD_PATTERN)
    type: KeyType = "int64"


class EntityIn(BaseModel):
    """What identifies the thing features describe: a customer, a driver, a (store, item)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"join_keys": [{"name": "driver_id", "type": "int64"}], "description": ""}]
        },
    )

    join_keys: list[JoinKey] = Field(min_length=1, max_length=5)
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _distinct_keys(self) -> EntityIn:
        names = [key.name for key in self.join_keys]
        if len(set(names)) != len(names):
            raise ValueError("join key names must be distinct")
        return self


class EntityOut(EntityIn):
    name: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class Expectations(BaseModel):
    """What a feature's values must satisfy besides their type (checked on ingest and on
    materialization)."""

    model_config = ConfigDict(extra="forbid")

    nullable: bool = True
    min: float | None = Field(default=None, description="Numeric features only.")
    max: float | None = Field(default=None, description="Numeric features only.")
    allowed_values: list[int | str | bool] | None = Field(default=None, min_length=1)


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FIELD_PATTERN)
    type: FeatureType
    description: str = Field(default="", max_length=2000)
    expectations: Expectations | None = None

    @model_validator(mode="after")
    def _expectations_fit_the_type(self) -> FeatureSpec:
        expected = self.expectations
        if expected is None:
            return self
        numeric = self.type in ("int64", "float64")
        if (expected.min is not None or expected.max is not None) and not numeric:
            raise ValueError("min and max apply to int64 and float64 features")
        if expected.min is not None and expected.max is not None and expected.min > expected.max:
            raise ValueError("min is above max")
        kinds: dict[str, type | tuple[type, ...]] = {
            "int64": int,
            "float64": (int, float),
            "string": str,
            "bool": bool,
        }
        for value in expected.allowed_values or []:
            if not isinstance(value, kinds[self.type]) or (
                isinstance(value, bool) and self.type != "bool"
            ):
                raise ValueError(f"allowed value {value!r} is not {self.type}")
        return self


class SourceSpec(BaseModel):
    """A Parquet or CSV file the view's rows can be ingested from."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=2000, examples=["file:///data/driver_stats.parquet"])


class FeatureViewIn(BaseModel):
    """A group of features of one or more entities, with where their rows come from and how
    long a value stays valid. A change that breaks a feature (its type changes or it goes
    away) needs ``version`` set to the next version number; the new version starts with no
    rows of its own."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "entities": ["driver"],
                    "features": [
                        {"name": "conv_rate", "type": "float64"},
                        {"name": "trips_today", "type": "int64"},
                    ],
                    "ttl_seconds": 86400,
                    "timestamp_field": "event_timestamp",
                    "tags": {"team": "rides"},
                    "owner": "rides-ml@example.com",
                }
            ]
        },
    )

    entities: list[str] = Field(min_length=1, max_length=3)
    features: list[FeatureSpec] = Field(min_length=1, max_length=1000)
    source: SourceSpec | None = None
    ttl_seconds: int | None = Field(
        default=None, gt=0, description="How long a value stays valid; none: for ever."
    )
    timestamp_field: str = Field(default="event_timestamp", pattern=FIELD_PATTERN)
    created_timestamp_field: str | None = Field(
        default=None,
        pattern=FIELD_PATTERN,
        description="When each value became known (a backfill is not seen before it); without "
        "it, a value is known from its event time.",
    )
    freshness_seconds: int | None = Field(
        default=None,
        gt=0,
        description="The newest value must be at most this old when the view is materialized.",
    )
    materialize_every_minutes: int | None = Field(
        default=None,
        ge=1,
        le=7 * 24 * 60,
        description="Materialize new batches on this schedule (incremental); none: on request.",
    )
    on_violation: Literal["reject", "warn"] = Field(
        default="reject",
        description="An ingest that breaks an expectation: refused (422), or kept with a report.",
    )
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=2000)
    version: int | None = Field(
        default=None, ge=1, description="Declare the next version to make a breaking change."
    )

    @model_validator(mode="after")
    def _distinct_names(self) -> FeatureViewIn:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be distinct")
        if len(set(self.entities)) != len(self.entities):
            raise ValueError("entities must be distinct")
        if self.created_timestamp_field == self.timestamp_field:
            raise ValueError("created_timestamp_field must differ from timestamp_field")
        return self


class FeatureViewOut(FeatureViewIn):
    name: str
    version: int
    join_keys: list[JoinKey]
    rows: int = Field(description="Rows in the offline store for this version.")
    created_by: str
    created_at: datetime
    updated_at: datetime


class FeatureRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    view: str = Field(pattern=NAME_PATTERN)
    features: list[str] | None = Field(
        default=None, min_length=1, description="Default: every feature of the view."
    )


class FeatureServiceIn(BaseModel):
    """The set of features a model consumes, taken from one or more views."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "features": [{"view": "driver_hourly", "features": ["conv_rate"]}],
                    "description": "ETA model inputs",
                }
            ]
        },
    )

    features: list[FeatureRef] = Field(min_length=1, max_length=50)
    description: str = Field(default="", max_length=2000)
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str | None = Field(default=None, max_length=200)


class FeatureServiceOut(FeatureServiceIn):
    name: str
    columns: list[str] = Field(description="The features it answers, in order.")
    created_by: str
    created_at: datetime
    updated_at: datetime


class Applied(BaseModel):
    """What an apply did: created, updated, new_version or unchanged."""

    kind: Literal["entity", "feature_view", "feature_service"]
    name: str
    outcome: Literal["created", "updated", "new_version", "unchanged"]
    version: int | None = None


class IngestIn(BaseModel):
    """Rows for the view's current version: every join key, the timestamp field, every
    feature (null allowed) and the created timestamp field if the view has one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rows": [
                        {
                            "driver_id": 1001,
                            "event_timestamp": "2026-11-27T10:00:00Z",
                            "conv_rate": 0.61,
                            "trips_today": 14,
                        }
                    ]
                }
            ]
        },
    )

    rows: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100_000)
    from_source: bool = Field(default=False, description="Read the view's source file instead.")

    @model_validator(mode="after")
    def _one_origin(self) -> IngestIn:
        if (self.rows is None) == (not self.from_source):
            raise ValueError("give either rows or from_source: true")
        return self


class ValidationFailure(BaseModel):
    feature: str
    expectation: Literal["not_null", "min", "max", "allowed_values", "freshness"]
    failed_rows: int
    first_row: int | None
    sample: list[Any]


class ValidationReport(BaseModel):
    rows: int
    passed: bool
    failures: list[ValidationFailure]


class IngestOut(BaseModel):
    batch_id: uuid.UUID
    view: str
    version: int
    rows: int
    min_event_timestamp: datetime
    max_event_timestamp: datetime
    validation: ValidationReport


class MaterializeIn(BaseModel):
    """Without start and end: every batch ingested since the last materialization
    (incremental). With them: the rows whose event time falls in [start, end]."""

    model_config = ConfigDict(extra="forbid")

    start: datetime | None = None
    end: datetime | None = None


class MaterializationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    view: str
    version: int
    mode: Literal["range", "incremental", "full"]
    start: datetime | None
    end: datetime | None
    status: Literal["succeeded", "failed"]
    rows_read: int
    entities_written: int
    error: str | None
    validation: ValidationReport | None
    created_by: str
    started_at: datetime
    finished_at: datetime


class HistoricalIn(BaseModel):
    """The entity frame: its rows (join keys, a timestamp and anything else, such as labels,
    passed through) or the URI of a dataset holding it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "feature_service": "eta_model",
                    "entities": [
                        {"driver_id": 1001, "event_timestamp": "2026-11-27T12:00:00Z", "label": 1}
                    ],
                }
            ]
        },
    )

    feature_service: str = Field(pattern=NAME_PATTERN)
    entities: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100_000)
    entities_uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="A dataset (file://, a path, an artifact URI) holding the entity frame.",
    )
    timestamp_column: str = Field(default="event_timestamp", pattern=FIELD_PATTERN)
    format: Literal["json", "parquet"] = "json"

    @model_validator(mode="after")
    def _one_frame(self) -> HistoricalIn:
        if (self.entities is None) == (self.entities_uri is None):
            raise ValueError("give exactly one of entities and entities_uri")
        return self


class HistoricalOut(BaseModel):
    feature_service: str
    columns: list[str]
    rows: list[list[Any]]
    dataset_uri: str | None = Field(
        default=None,
        description="With entities_uri: the same training set as a dataset URI that training "
        "jobs and pipeline steps accept.",
    )


class OnlineIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"feature_service": "eta_model", "entities": [{"driver_id": 1001}]}]
        },
    )

    feature_service: str = Field(pattern=NAME_PATTERN)
    entities: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class OnlineResult(BaseModel):
    values: list[Any]
    statuses: list[Literal["present", "missing", "outside_ttl"]]


class OnlineOut(BaseModel):
    feature_service: str
    features: list[str]
    results: list[OnlineResult] = Field(description="One per entity row, in the request's order.")
