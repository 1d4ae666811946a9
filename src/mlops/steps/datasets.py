"""Reading and writing tabular datasets by URI.

Supported: local paths and ``file://`` URIs (``.csv``, ``.parquet``), ``sklearn://NAME`` (the
datasets bundled with scikit-learn, label column ``target``), ``features://`` (a feature
service's training set), ``labelled://`` (a deployment's logged requests with their ground
truth) and URIs of the artifact store.
pandas and scikit-learn are imported on first use, so a step that needs neither starts fast.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import StepError

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

SKLEARN_DATASETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")
FORMATS = (".csv", ".parquet")
SCHEMES = (
    "a local path",
    "file://",
    "sklearn://",
    "features://",
    "labelled://",
    "the artifact store's URIs",
)
_PARQUET_MAGIC = b"PAR1"


def _supported() -> str:
    return (
        f"supported: {', '.join(SCHEMES)} (for files: {', '.join(FORMATS)}); "
        f"sklearn datasets: {', '.join(SKLEARN_DATASETS)}"
    )


def load_dataset(uri: str, artifacts: ArtifactStore | None = None) -> pd.DataFrame:
    """The dataset at ``uri`` as a DataFrame; StepError with a readable message otherwise."""
    if not isinstance(uri, str) or not uri:
        raise StepError(f"dataset URI must be a non-empty string; {_supported()}")
    if artifacts is not None and artifacts.owns(uri):
        return _load_artifact(uri, artifacts)
    if uri.startswith("sklearn://"):
        return _load_sklearn(uri[len("sklearn://") :])
    if uri.startswith("features://"):
        from mlops.features.dataset import load_features_dataset

        return load_features_dataset(uri)
    if uri.startswith("labelled://"):
        from mlops.monitoring.labelled import load_labelled_dataset

        return load_labelled_dataset(uri)
    if uri.startswith("file://"):
        return _load_file(Path(uri[len("file://") :]), uri)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StepError(f"unsupported dataset URI scheme {scheme!r} in {uri!r}; {_supported()}")
    return _load_file(Path(uri), uri)


def save_dataset(df: pd.DataFrame, uri: str, artifacts: ArtifactStore) -> str:
    """Write ``df`` as parquet to the artifact ``uri``; return the URI."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return artifacts.put_bytes(uri, buffer.getvalue())


def _read(handle: Any, kind: str, where: str) -> pd.DataFrame:
    import pandas as pd

    try:
        if kind == ".csv":
            return pd.read_csv(handle)
        return pd.read_parquet(handle)
    except Exception as exc:  # any parser error is the same failure: not a readable dataset
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"cannot read {kind[1:]} dataset {where}: {reason}") from exc


def _load_file(path: Path, uri: str) -> pd.DataFrame:
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise StepError(
            f"unsupported dataset file format {path.suffix or '(none)'!r} for {uri!r}; "
            f"supported formats: {', '.join(FORMATS)}"
        )
    if not path.is_file():
        raise StepError(f"dataset file not found: {path}")
    return _read(path, kind, str(path))


def _load_artifact(uri: str, artifacts: ArtifactStore) -> pd.DataFrame:
    if not artifacts.exists(uri):
        raise StepError(f"dataset artifact not found: {uri}")
    with artifacts.open(uri, "rb") as handle:
        data = handle.read()
    kind = ".csv" if uri.lower().endswith(".csv") else ".parquet"
    if kind == ".parquet" and not data.startswith(_PARQUET_MAGIC):
        kind = ".csv"  # an artifact without a parquet header: try it as CSV
    return _read(io.BytesIO(data), kind, uri)


def _load_sklearn(name: str) -> pd.DataFrame:
    if name not in SKLEARN_DATASETS:
        raise StepError(
            f"unknown sklearn dataset {name!r}; available: {', '.join(SKLEARN_DATASETS)}"
        )
    from sklearn import datasets  # type: ignore[import-untyped,unused-ignore]

    loader = getattr(datasets, f"load_{name}")
    frame = loader(as_frame=True).frame.copy()
    frame.columns = [str(column) for column in frame.columns]
    return frame


def peek_dataset(uri: str, artifacts: ArtifactStore | None = None) -> tuple[list[str], int | None]:
    """``(columns, rows)`` read cheaply (a file's header or parquet footer; rows None when only
    a full read would tell), so a bad job is refused before it is queued. StepError otherwise."""
    import pyarrow.parquet as pq

    if artifacts is not None and artifacts.owns(uri):
        if not artifacts.exists(uri):
            raise StepError(f"dataset artifact not found: {uri}")
        return [], None  # written by a step: checked when the job reads it
    if uri.startswith("sklearn://"):
        frame = load_dataset(uri)
        return [str(c) for c in frame.columns], len(frame)
    if uri.startswith("features://"):
        from mlops.features.dataset import parse_features_uri

        try:
            _, entities, _ = parse_features_uri(uri)
        except ValueError as exc:
            raise StepError(str(exc)) from None
        _, rows = peek_dataset(entities, artifacts)
        return [], rows  # the columns depend on the feature service: known when it is read
    if uri.startswith("labelled://"):
        from mlops.monitoring.labelled import parse_labelled_uri

        try:
            parse_labelled_uri(uri)
        except ValueError as exc:
            raise StepError(str(exc)) from None
        return [], None  # the columns and rows depend on the log: known when it is read
    path = (
        Path(uri.removeprefix("file://")) if "://" not in uri or uri.startswith("file://") else None
    )
    if path is None:
        load_dataset(uri)  # raises the unsupported-scheme error
        return [], None
    kind = path.suffix.lower()
    if kind not in FORMATS or not path.is_file():
        _load_file(path, uri)  # raises the matching error
    try:
        if kind == ".parquet":
            metadata = pq.read_metadata(path)
            return list(metadata.schema.names), metadata.num_rows
        import pandas as pd

        columns = [str(c) for c in pd.read_csv(path, nrows=0).columns]
        head = pd.read_csv(path, nrows=1)
        return columns, None if len(head) else 0
    except Exception as exc:
        raise StepError(f"cannot read {kind[1:]} dataset {path}: {exc}") from exc
