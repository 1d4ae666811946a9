"""The offline store: each ingested batch of a view version is one Parquet file under a root
(a local folder by default, any fsspec URI otherwise). Files are written under a temporary
name and moved into place; the database's ``feature_batches`` row is what makes a file part
of the store, so a crash between the two leaves an unreferenced file, never a half batch."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs as pafs


class OfflineStore(Protocol):
    root: str

    def write(self, path: str, table: pa.Table) -> None: ...

    def read(
        self,
        paths: Sequence[str],
        schema: pa.Schema,
        columns: Sequence[str],
        event_between: tuple[datetime | None, datetime | None] = (None, None),
    ) -> pa.Table: ...

    def remove(self, paths: Sequence[str]) -> None: ...


class ParquetOfflineStore:
    """Parquet files under ``root``, read with the view's current schema so that a feature
    added since a file was written reads as null."""

    def __init__(self, root: str) -> None:
        if "://" in root and not root.startswith("file://"):
            import fsspec
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            fsspec_fs, base = fsspec.core.url_to_fs(root)
            self._fs: pafs.FileSystem = PyFileSystem(FSSpecHandler(fsspec_fs))
            self._base = str(base).rstrip("/")
        else:
            local = root.removeprefix("file://")
            self._fs = pafs.LocalFileSystem()
            self._base = os.path.abspath(os.path.expanduser(local)).rstrip("/")
        self.root = root

    def _full(self, path: str) -> str:
        return f"{self._base}/{path}"

    def write(self, path: str, table: pa.Table) -> None:
        target = self._full(path)
        self._fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        temporary = f"{target}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, temporary, filesystem=self._fs, row_group_size=1_000_000)
        self._fs.move(temporary, target)

    def read(
        self,
        paths: Sequence[str],
        schema: pa.Schema,
        columns: Sequence[str],
        event_between: tuple[datetime | None, datetime | None] = (None, None),
    ) -> pa.Table:
        if not paths:
            return schema.empty_table().select(list(columns))
        condition: Any = None
        low, high = event_between
        event = ds.field("event_timestamp")
        kind = schema.field("event_timestamp").type
        if low is not None:
            condition = event >= pa.scalar(low, kind)
        if high is not None:
            upper = event <= pa.scalar(high, kind)
            condition = upper if condition is None else condition & upper
        # file by file, in the order given: among rows that tie on both timestamps the one
        # ingested last wins, so the order of the batches is part of the answer
        tables = [
            ds.dataset(
                self._full(path), schema=schema, format="parquet", filesystem=self._fs
            ).to_table(columns=list(columns), filter=condition)
            for path in paths
        ]
        return pa.concat_tables(tables)

    def remove(self, paths: Sequence[str]) -> None:
        for path in paths:
            try:
                self._fs.delete_file(self._full(path))
            except FileNotFoundError:
                continue
