"""Feature definitions: entities, versioned feature views and feature services.

A view's version is its compatibility epoch. A change that keeps every feature and its type
(new features, a new time-to-live, tags, owner, source) updates the newest version in place; a
change that drops a feature, changes its type or changes the view's entities is refused unless
the request declares the next version, which starts with no rows of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.database import utcnow
from mlops.core.errors import Conflict, InvalidFields, NotFound
from mlops.features.frames import ViewSchema
from mlops.features.models import FeatureEntity, FeatureServiceRecord, FeatureViewVersion
from mlops.features.schemas import (
    NAME_PATTERN,
    RESERVED_COLUMNS,
    Applied,
    EntityIn,
    FeatureServiceIn,
    FeatureViewIn,
)


@dataclass(frozen=True)
class ResolvedView:
    id: Any
    name: str
    version: int
    schema: ViewSchema
    ttl: timedelta | None

    @property
    def namespace(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.schema.join_keys)


@dataclass(frozen=True)
class ServicePart:
    view: ResolvedView
    features: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedService:
    """A feature service bound to the current version of each of its views."""

    name: str
    parts: tuple[ServicePart, ...]

    @property
    def columns(self) -> list[str]:
        return [feature for part in self.parts for feature in part.features]

    @property
    def join_keys(self) -> list[tuple[str, str]]:
        keys: dict[str, str] = {}
        for part in self.parts:
            for name, kind in part.view.schema.join_keys:
                keys.setdefault(name, kind)
        return list(keys.items())


def resolve_view(record: FeatureViewVersion) -> ResolvedView:
    definition = record.definition
    ttl = definition.get("ttl_seconds")
    return ResolvedView(
        id=record.id,
        name=record.name,
        version=record.version,
        schema=ViewSchema(
            join_keys=tuple((key["name"], key["type"]) for key in record.join_keys),
            features=tuple((f["name"], f["type"]) for f in definition["features"]),
            timestamp_field=definition["timestamp_field"],
            created_timestamp_field=definition.get("created_timestamp_field"),
        ),
        ttl=timedelta(seconds=ttl) if ttl else None,
    )


def expectations_of(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f["expectations"] for f in definition["features"] if f.get("expectations")}


def _breaking_changes(current: dict[str, Any], wanted: FeatureViewIn) -> list[str]:
    before = {f["name"]: f["type"] for f in current["features"]}
    after = {f.name: f.type for f in wanted.features}
    changes = [f"feature {name!r} removed" for name in before if name not in after]
    changes += [
        f"feature {name!r} changes type {before[name]} -> {after[name]}"
        for name in before
        if name in after and before[name] != after[name]
    ]
    if current["entities"] != wanted.entities:
        changes.append(f"entities change {current['entities']} -> {wanted.entities}")
    return changes


def check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidFields(
            [
                (
                    ["path", "name"],
                    "lowercase letters, digits and underscores, starting with a letter (at most "
                    "63)",
                )
            ]
        )


Named = TypeVar("Named", FeatureEntity, FeatureServiceRecord)


class FeatureRegistry:
    """Reads and writes definitions in the caller's transaction (it only flushes)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _named(self, model: type[Named], name: str) -> Named | None:
        return await self.session.scalar(select(model).where(model.name == name))

    # -- entities -------------------------------------------------------------------------

    async def entity(self, name: str) -> FeatureEntity:
        found = await self._named(FeatureEntity, name)
        if found is None:
            raise NotFound(f"No entity named {name!r}")
        return found

    def entities_query(self) -> Any:
        return select(FeatureEntity).order_by(FeatureEntity.name)

    async def put_entity(self, name: str, body: EntityIn, actor: str) -> Applied:
        check_name(name)
        keys = [key.model_dump() for key in body.join_keys]
        clash = [key["name"] for key in keys if key["name"] in RESERVED_COLUMNS]
        if clash:
            raise InvalidFields([(["body", "join_keys"], f"reserved column names: {clash}")])
        found = await self._named(FeatureEntity, name)
        if found is None:
            self.session.add(
                FeatureEntity(
                    name=name, join_keys=keys, description=body.description, created_by=actor
                )
            )
            await self.session.flush()
            return Applied(kind="entity", name=name, outcome="created")
        if found.join_keys == keys and found.description == body.description:
            return Applied(kind="entity", name=name, outcome="unchanged")
        if found.join_keys != keys:
            users = await self._views_using_entity(name)
            if users:
                raise Conflict(
                    f"Entity {name!r} is used by feature views {users}: its join keys cannot "
                    "change (declare a new entity instead)"
                )
        found.join_keys, found.description, found.updated_at = keys, body.description, utcnow()
        await self.session.flush()
        return Applied(kind="entity", name=name, outcome="updated")

    async def delete_entity(self, name: str) -> None:
        found = await self.entity(name)
        users = await self._views_using_entity(name)
        if users:
            raise Conflict(f"Entity {name!r} is used by feature views {users}")
        await self.session.delete(found)
        await self.session.flush()

    async def _views_using_entity(self, name: str) -> list[str]:
        return sorted(
            {
                view.name
                for view in await self.current_views()
                if name in view.definition["entities"]
            }
        )

    # -- feature views --------------------------------------------------------------------

    async def current_views(self) -> list[FeatureViewVersion]:
        newest = (
            select(FeatureViewVersion.name, func.max(FeatureViewVersion.version).label("version"))
            .group_by(FeatureViewVersion.name)
            .subquery()
        )
        query = (
            select(FeatureViewVersion)
            .join(
                newest,
                (FeatureViewVersion.name == newest.c.name)
                & (FeatureViewVersion.version == newest.c.version),
            )
            .order_by(FeatureViewVersion.name)
        )
        return list((await self.session.scalars(query)).all())

    async def view(self, name: str, version: int | None = None) -> FeatureViewVersion:
        query = select(FeatureViewVersion).where(FeatureViewVersion.name == name)
        if version is not None:
            query = query.where(FeatureViewVersion.version == version)
        found = await self.session.scalar(query.order_by(FeatureViewVersion.version.desc()))
        if found is None:
            which = f" version {version}" if version is not None else ""
            raise NotFound(f"No feature view named {name!r}{which}")
        return found

    async def view_versions(self, name: str) -> list[FeatureViewVersion]:
        query = (
            select(FeatureViewVersion)
            .where(FeatureViewVersion.name == name)
            .order_by(FeatureViewVersion.version)
        )
        versions = list((await self.session.scalars(query)).all())
        if not versions:
            raise NotFound(f"No feature view named {name!r}")
        return versions

    async def put_view(self, name: str, body: FeatureViewIn, actor: str) -> Applied:
        check_name(name)
        join_keys = await self._join_keys(body)
        definition = body.model_dump(mode="json", exclude={"version"})
        current = await self.session.scalar(
            select(FeatureViewVersion)
            .where(FeatureViewVersion.name == name)
            .order_by(FeatureViewVersion.version.desc())
        )
        if current is None:
            if body.version not in (None, 1):
                raise InvalidFields([(["body", "version"], "a new feature view starts at 1")])
            self._add_version(name, 1, definition, join_keys, actor)
            await self.session.flush()
            return Applied(kind="feature_view", name=name, outcome="created", version=1)
        if body.version == current.version + 1:
            await self._check_services_keep_working(name, body)
            self._add_version(name, body.version, definition, join_keys, actor)
            await self.session.flush()
            return Applied(
                kind="feature_view", name=name, outcome="new_version", version=body.version
            )
        if body.version not in (None, current.version):
            raise Conflict(
                f"Feature view {name!r} is at version {current.version}: declare version "
                f"{current.version} or {current.version + 1}"
            )
        breaking = _breaking_changes(current.definition, body)
        if breaking:
            raise Conflict(
                f"Breaking change to feature view {name!r} ({'; '.join(breaking)}): declare "
                f"version {current.version + 1} to make it"
            )
        if current.definition == definition and current.join_keys == join_keys:
            return Applied(
                kind="feature_view", name=name, outcome="unchanged", version=current.version
            )
        current.definition, current.join_keys, current.updated_at = definition, join_keys, utcnow()
        await self.session.flush()
        return Applied(kind="feature_view", name=name, outcome="updated", version=current.version)

    def _add_version(
        self,
        name: str,
        version: int,
        definition: dict[str, Any],
        join_keys: list[dict[str, str]],
        actor: str,
    ) -> None:
        self.session.add(
            FeatureViewVersion(
                name=name,
                version=version,
                definition=definition,
                join_keys=join_keys,
                rows=0,
                created_by=actor,
            )
        )

    async def _join_keys(self, body: FeatureViewIn) -> list[dict[str, str]]:
        keys: list[dict[str, str]] = []
        problems: list[tuple[list[str | int], str]] = []
        for index, entity_name in enumerate(body.entities):
            found = await self._named(FeatureEntity, entity_name)
            if found is None:
                problems.append((["body", "entities", index], f"no entity named {entity_name!r}"))
                continue
            keys += [key for key in found.join_keys if key not in keys]
        key_names = {key["name"] for key in keys}
        stamps = {body.timestamp_field, body.created_timestamp_field}
        for index, feature in enumerate(body.features):
            if feature.name in key_names | RESERVED_COLUMNS | stamps:
                problems.append(
                    (
                        ["body", "features", index, "name"],
                        f"{feature.name!r} is a join key, a timestamp field or a reserved name",
                    )
                )
        if problems:
            raise InvalidFields(problems)
        return keys

    async def _check_services_keep_working(self, name: str, body: FeatureViewIn) -> None:
        kept = {feature.name for feature in body.features}
        for service in await self.services():
            for ref in service.definition["features"]:
                if ref["view"] == name and ref["features"] is not None:
                    lost = [feature for feature in ref["features"] if feature not in kept]
                    if lost:
                        raise Conflict(
                            f"Feature service {service.name!r} uses {lost} of {name!r}: "
                            "change the service first"
                        )

    async def delete_view(self, name: str) -> list[FeatureViewVersion]:
        versions = await self.view_versions(name)
        users = [
            service.name
            for service in await self.services()
            if any(ref["view"] == name for ref in service.definition["features"])
        ]
        if users:
            raise Conflict(f"Feature view {name!r} is used by feature services {users}")
        for version in versions:
            await self.session.delete(version)
        await self.session.flush()
        return versions

    # -- feature services ---------------------------------------------------------------

    async def services(self) -> list[FeatureServiceRecord]:
        query = select(FeatureServiceRecord).order_by(FeatureServiceRecord.name)
        return list((await self.session.scalars(query)).all())

    async def service_record(self, name: str) -> FeatureServiceRecord:
        found = await self._named(FeatureServiceRecord, name)
        if found is None:
            raise NotFound(f"No feature service named {name!r}")
        return found

    async def put_service(self, name: str, body: FeatureServiceIn, actor: str) -> Applied:
        check_name(name)
        definition = body.model_dump(mode="json")
        await self._bind(definition, body_errors=True)
        found = await self._named(FeatureServiceRecord, name)
        if found is None:
            self.session.add(
                FeatureServiceRecord(name=name, definition=definition, created_by=actor)
            )
            await self.session.flush()
            return Applied(kind="feature_service", name=name, outcome="created")
        if found.definition == definition:
            return Applied(kind="feature_service", name=name, outcome="unchanged")
        found.definition, found.updated_at = definition, utcnow()
        await self.session.flush()
        return Applied(kind="feature_service", name=name, outcome="updated")

    async def delete_service(self, name: str) -> None:
        from mlops.deployments.models import Deployment

        record = await self.service_record(name)
        users = (
            await self.session.scalars(
                select(Deployment.name).where(Deployment.feature_service == name)
            )
        ).all()
        if users:
            raise Conflict(f"Feature service {name!r} completes requests of deployments {users}")
        await self.session.delete(record)
        await self.session.flush()

    async def resolve_service(self, name: str) -> ResolvedService:
        return await self.resolve(await self.service_record(name))

    async def resolve(self, record: FeatureServiceRecord) -> ResolvedService:
        return ResolvedService(name=record.name, parts=await self._bind(record.definition))

    async def _bind(
        self, definition: dict[str, Any], body_errors: bool = False
    ) -> tuple[ServicePart, ...]:
        """The service's references bound to current view versions; each broken reference
        named (as a request's fields when ``body_errors``, else as a conflict)."""
        parts: list[ServicePart] = []
        problems: list[tuple[list[str | int], str]] = []
        seen: dict[str, str] = {}
        for index, ref in enumerate(definition["features"]):
            try:
                view = resolve_view(await self.view(ref["view"]))
            except NotFound:
                problems.append((["body", "features", index, "view"], "no such feature view"))
                continue
            available = [name for name, _ in view.schema.features]
            chosen = ref["features"] or available
            for position, feature in enumerate(chosen):
                where: list[str | int] = ["body", "features", index, "features", position]
                if feature not in available:
                    problems.append((where, f"{view.name!r} has no feature {feature!r}"))
                elif feature in seen:
                    problems.append((where, f"{feature!r} already comes from {seen[feature]!r}"))
                else:
                    seen[feature] = view.name
            parts.append(ServicePart(view=view, features=tuple(chosen)))
        if problems:
            if body_errors:
                raise InvalidFields(problems)
            raise Conflict(
                "The feature service no longer matches its views: "
                + "; ".join(message for _, message in problems)
            )
        return tuple(parts)
