"""``features://`` dataset URIs: a feature service's point-in-time training set over an entity
frame held in another dataset, which training jobs and pipeline steps load like any other.

``features://SERVICE?entities=<URI of the entity frame>&timestamp_column=event_timestamp``
(the entity URI percent-encoded). A step resolves it against the service's database and
offline store, which it reaches through its environment, as the ``deploy`` step does.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, quote, urlsplit

import pandas as pd

from mlops.core.errors import InvalidInput

SCHEME = "features://"
FEATURE_LINEAGE = "mlops.features"  # DataFrame.attrs key: the service and view versions read


def features_uri(service: str, entities_uri: str, timestamp_column: str) -> str:
    return (
        f"{SCHEME}{service}?entities={quote(entities_uri, safe='')}"
        f"&timestamp_column={quote(timestamp_column, safe='')}"
    )


def parse_features_uri(uri: str) -> tuple[str, str, str]:
    """(service, entities URI, timestamp column); ValueError naming what is wrong."""
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    if parts.scheme != "features" or not parts.netloc:
        raise ValueError(f"expected features://SERVICE?entities=URI, got {uri!r}")
    entities = query.get("entities")
    if not entities:
        raise ValueError(f"{uri!r} names no entity frame (entities=URI)")
    timestamp_column = query.get("timestamp_column", ["event_timestamp"])[0]
    return parts.netloc, entities[0], timestamp_column


async def load_entities(uri: str) -> pd.DataFrame:
    from mlops.steps.datasets import load_dataset
    from mlops.steps.framework import StepError

    if uri.startswith(SCHEME):
        raise InvalidInput(
            "an entity frame cannot itself be a features:// URI", field=["body", "entities_uri"]
        )
    try:
        return await asyncio.to_thread(load_dataset, uri)
    except StepError as exc:
        raise InvalidInput(str(exc), field=["body", "entities_uri"]) from exc


def load_features_dataset(uri: str) -> pd.DataFrame:
    """The training set a ``features://`` URI names, read in a step's process."""
    return asyncio.run(_load(uri))


async def _load(uri: str) -> pd.DataFrame:
    from mlops.core.database import create_database
    from mlops.core.errors import DomainError
    from mlops.core.settings import Settings
    from mlops.features.schemas import HistoricalIn
    from mlops.features.service import FeatureStore, open_stores
    from mlops.steps.framework import StepError

    try:
        service, entities_uri, timestamp_column = parse_features_uri(uri)
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    settings = Settings()
    database = create_database(settings)
    stores = open_stores(settings)
    try:
        async with database.sessionmaker() as session:
            store = FeatureStore(session, stores)
            body = HistoricalIn(
                feature_service=service,
                entities_uri=entities_uri,
                timestamp_column=timestamp_column,
            )
            frame, _ = await store.training_frame(body)
            return frame
    except DomainError as exc:
        raise StepError(f"{uri}: {exc.detail}") from exc
    finally:
        await stores.online.close()
        await database.dispose()
