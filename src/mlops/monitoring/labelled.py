"""``labelled://`` dataset URIs: a deployment's logged requests joined with their ground truth,
as a frame that training jobs and pipeline steps load like any other dataset.

``labelled://DEPLOYMENT?since=ISO&until=ISO&part=train&holdout_share=0.3&target=target``
(values percent-encoded). The frame holds one row per row of every request the deployment
answered without error in ``[since, until)`` (UTC; a naive time is read as UTC) that has ground
truth: the logged feature columns, in first-seen order, then the label in column ``target``.
``part`` keeps every row (``all``, the default), or the ``train`` or ``holdout`` side of a split
that hashes (prediction id, row index), so it is the same in every process and run, and a row
held out at one share stays held out at any larger share. A step resolves the URI against the
service's database, which it reaches through its environment, as ``features://`` does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import parse_qs, quote, unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.database import as_utc
from mlops.core.errors import InvalidInput, NotFound
from mlops.deployments.models import Deployment
from mlops.monitoring.models import GroundTruth, LoggedPrediction

if TYPE_CHECKING:
    import pandas as pd

SCHEME = "labelled://"
LINEAGE = "mlops.labelled"  # DataFrame.attrs key: what the frame was read from
Part = Literal["train", "holdout", "all"]
PARTS: tuple[str, ...] = get_args(Part)
PARAMETERS = ("since", "until", "part", "holdout_share", "target")
CHUNK = 1000  # logged requests fetched from the database at a time

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class LabelledQuery:
    """Which labelled rows of a deployment's log to read; checked (ValueError) when made."""

    deployment: str
    since: datetime  # UTC, inclusive
    until: datetime  # UTC, exclusive
    part: Part = "all"
    holdout_share: float = 0.3  # in (0, 1)
    target: str = "target"  # the label column's name in the frame

    def __post_init__(self) -> None:
        if not self.deployment:
            raise ValueError("a labelled dataset names no deployment")
        object.__setattr__(self, "since", as_utc(self.since))
        object.__setattr__(self, "until", as_utc(self.until))
        if self.since >= self.until:
            raise ValueError(
                f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})"
            )
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, not {self.part!r}")
        if not 0.0 < self.holdout_share < 1.0:  # also refuses NaN
            raise ValueError(f"holdout_share must be in (0, 1), not {self.holdout_share}")
        if not self.target:
            raise ValueError("target (the label column's name) must not be empty")


def labelled_uri(query: LabelledQuery) -> str:
    """The URI that names ``query``; ``parse_labelled_uri`` reads it back unchanged."""
    values = {
        "since": query.since.isoformat(),
        "until": query.until.isoformat(),
        "part": query.part,
        "holdout_share": repr(float(query.holdout_share)),
        "target": query.target,
    }
    encoded = "&".join(f"{key}={quote(value, safe='')}" for key, value in values.items())
    return f"{SCHEME}{quote(query.deployment, safe='')}?{encoded}"


def parse_labelled_uri(uri: str) -> LabelledQuery:
    """The query a ``labelled://`` URI names; ValueError naming what is wrong."""
    usage = "labelled://DEPLOYMENT?since=ISO&until=ISO[&part=...&holdout_share=...&target=...]"
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"expected {usage}, got {uri!r}")
    parts = urlsplit(uri)
    deployment = unquote(parts.netloc)
    if not deployment:
        raise ValueError(f"{uri!r} names no deployment; expected {usage}")
    given = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(given) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"{uri!r}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}"
        )
    twice = sorted(key for key, values in given.items() if len(values) > 1)
    if twice:
        raise ValueError(f"{uri!r}: parameter(s) given more than once: {', '.join(twice)}")
    value = {key: values[0] for key, values in given.items()}
    for key in ("since", "until"):
        if not value.get(key):
            raise ValueError(f"{uri!r} gives no {key}= (an ISO 8601 time, UTC when naive)")
    share = value.get("holdout_share", "0.3")
    try:
        holdout_share = float(share)
    except ValueError:
        raise ValueError(
            f"{uri!r}: holdout_share must be a number in (0, 1), not {share!r}"
        ) from None
    try:
        return LabelledQuery(
            deployment=deployment,
            since=_moment(value["since"], "since"),
            until=_moment(value["until"], "until"),
            part=value.get("part", "all"),  # type: ignore[arg-type]  # checked by the query
            holdout_share=holdout_share,
            target=value.get("target", "target"),
        )
    except ValueError as exc:
        raise ValueError(f"{uri!r}: {exc}") from None


def _moment(text: str, name: str) -> datetime:
    # a hand-written "+00:00" reaches us as " 00:00" when the "+" was not percent-encoded
    for candidate in (text, text.replace(" ", "+")):
        try:
            return as_utc(datetime.fromisoformat(candidate))
        except ValueError:
            continue
    raise ValueError(f"{name} must be an ISO 8601 time, not {text!r}")


def in_holdout(prediction_id: int, row: int, share: float) -> bool:
    """Whether row ``row`` of logged request ``prediction_id`` is held out at ``share``: a
    splitmix64 hash of the pair mapped to [0, 1), so the same everywhere and in every run."""
    mixed = prediction_id * 0x9E3779B97F4A7C15 + row * 0xC2B2AE3D27D4EB4F + 0x165667B19E3779F9
    mixed &= _MASK
    mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & _MASK
    mixed ^= mixed >> 31
    return (mixed >> 11) / float(1 << 53) < share


async def read_labelled(session: AsyncSession, query: LabelledQuery) -> pd.DataFrame:
    """The frame ``query`` names (see the module's docstring). NotFound for an unknown
    deployment; InvalidInput when a logged feature column is named like the target."""
    import pandas as pd

    deployment = await session.scalar(select(Deployment).where(Deployment.name == query.deployment))
    if deployment is None:
        raise NotFound(f"No deployment '{query.deployment}'")
    statement = (
        select(
            LoggedPrediction.id,
            LoggedPrediction.features,
            GroundTruth.labels,
        )
        .join(GroundTruth, GroundTruth.prediction_id == LoggedPrediction.id)
        .where(
            LoggedPrediction.deployment_id == deployment.id,
            LoggedPrediction.created_at >= query.since,
            LoggedPrediction.created_at < query.until,
            LoggedPrediction.error.is_(None),
        )
        .order_by(LoggedPrediction.created_at, LoggedPrediction.id)
        .execution_options(yield_per=CHUNK)
    )
    data: dict[str, list[Any]] = {}  # column -> values, padded with None where a request lacks it
    labels: list[Any] = []
    requests = skipped = 0
    result = await session.stream(statement)
    try:
        async for chunk in result.partitions():
            for prediction_id, features, truth in chunk:
                columns = [str(c) for c in (features or {}).get("columns", [])]
                rows = (features or {}).get("rows", [])
                if len(rows) != len(truth or []) or any(len(r) != len(columns) for r in rows):
                    skipped += 1  # a log row that does not match its truth: nothing to learn from
                    continue
                for column in columns:
                    if column == query.target:
                        raise InvalidInput(
                            f"deployment {query.deployment!r} logs a feature named {column!r}, "
                            "like the target column; name the target otherwise (target=...)",
                            field=["query", "target"],
                        )
                    if column not in data:
                        data[column] = [None] * len(labels)
                kept = 0
                for index, (row, label) in enumerate(zip(rows, truth, strict=True)):
                    if query.part != "all" and in_holdout(
                        prediction_id, index, query.holdout_share
                    ) != (query.part == "holdout"):
                        continue
                    values = dict(zip(columns, row, strict=True))
                    for column, seen in data.items():
                        seen.append(values.get(column))
                    labels.append(label)
                    kept += 1
                requests += 1 if kept else 0
    finally:
        await result.close()  # the server-side cursor, also when a clash stops the read early
    frame = pd.DataFrame({**data, query.target: labels})
    frame.attrs[LINEAGE] = {
        "deployment": query.deployment,
        "since": query.since.isoformat(),
        "until": query.until.isoformat(),
        "part": query.part,
        "holdout_share": query.holdout_share,
        "target": query.target,
        "requests": requests,
        "rows": len(frame),
        "skipped_requests": skipped,
    }
    return frame


def load_labelled_dataset(uri: str) -> pd.DataFrame:
    """The frame a ``labelled://`` URI names, read in a step's process."""
    return asyncio.run(_load(uri))


async def _load(uri: str) -> pd.DataFrame:
    from mlops.core.database import create_database
    from mlops.core.errors import DomainError
    from mlops.core.settings import Settings
    from mlops.steps.framework import StepError

    try:
        query = parse_labelled_uri(uri)
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    database = create_database(Settings())
    try:
        async with database.sessionmaker() as session:
            return await read_labelled(session, query)
    except DomainError as exc:
        raise StepError(f"{uri}: {exc.detail}") from exc
    finally:
        await database.dispose()
