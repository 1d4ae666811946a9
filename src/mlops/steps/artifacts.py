"""The artifact store: where step outputs live, addressed by URI.

The root is a local folder (stored as ``file://`` URIs) or any fsspec URI (``memory://``,
``s3://``, ``gs://`` ...). Every artifact of a step is ``{root}/{run_id}/{step_name}/{name}``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import IO, Any

import fsspec  # type: ignore[import-untyped,unused-ignore]

_CHUNK = 1 << 20


def _check_component(label: str, value: str, *, nested: bool = False) -> None:
    parts = value.split("/") if nested else [value]
    if not value or any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
        raise ValueError(f"invalid artifact {label}: {value!r}")
    if not nested and "/" in value:
        raise ValueError(f"invalid artifact {label}: {value!r} (no '/' allowed)")


class ArtifactStore:
    """Artifacts under one root; the same root string gives the same URIs in every process."""

    def __init__(self, root: str) -> None:
        root = str(root)
        if "://" not in root or root.startswith("file://"):
            local = root[len("file://") :] if root.startswith("file://") else root
            if not local:
                raise ValueError("empty artifact root")
            self._local_root: Path | None = Path(os.path.abspath(os.path.expanduser(local)))
            self.root = "file://" + self._local_root.as_posix().rstrip("/")
            self._fs: Any = fsspec.filesystem("file")
            self._fs_root = self._local_root.as_posix().rstrip("/")
        else:
            self._local_root = None
            self.root = root.rstrip("/")
            self._fs, fs_root = fsspec.core.url_to_fs(self.root)
            self._fs_root = str(fs_root).rstrip("/")
        self._cache_dir: Path | None = None

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    @property
    def is_local(self) -> bool:
        return self._local_root is not None

    # -- addressing ---------------------------------------------------------------------------

    def uri_for(self, run_id: str, step_name: str, name: str) -> str:
        _check_component("run id", run_id)
        _check_component("step name", step_name)
        _check_component("name", name, nested=True)
        return f"{self.root}/{run_id}/{step_name}/{name}"

    def owns(self, value: Any) -> bool:
        """Is ``value`` a URI inside this store (a string under the root, no ``..`` tricks)?"""
        if not isinstance(value, str) or not value.startswith(self.root + "/"):
            return False
        relative = value[len(self.root) + 1 :]
        return bool(relative) and all(
            part not in ("", ".", "..") and "\\" not in part for part in relative.split("/")
        )

    def _path(self, uri: str) -> str:
        if not self.owns(uri):
            raise ValueError(f"{uri!r} is not an artifact URI of the store {self.root}")
        return f"{self._fs_root}/{uri[len(self.root) + 1 :]}"

    # -- writing ------------------------------------------------------------------------------

    def put_bytes(self, uri: str, data: bytes) -> str:
        path = self._path(uri)
        if self._local_root is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            partial.write_bytes(data)
            os.replace(partial, target)  # readers never see half an artifact
        else:
            self._fs.pipe_file(path, data)
        return uri

    def put_file(self, uri: str, local_path: Path) -> str:
        path = self._path(uri)
        if self._local_root is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            shutil.copyfile(local_path, partial)
            os.replace(partial, target)
        else:
            self._fs.put_file(str(local_path), path)
        return uri

    # -- reading ------------------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        return bool(self._fs.exists(self._path(uri)))

    def open(self, uri: str, mode: str = "rb") -> IO[Any]:
        path = self._path(uri)
        if self._local_root is not None and any(flag in mode for flag in "wax"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        handle: IO[Any] = self._fs.open(path, mode)
        return handle

    def local_path(self, uri: str) -> Path:
        """A local path with the artifact's content: the file itself for a local root, else a
        copy downloaded once into a private temporary folder (removed with the store)."""
        path = self._path(uri)
        if self._local_root is not None:
            local = Path(path)
            if not local.exists():
                raise FileNotFoundError(f"artifact not found: {uri}")
            return local
        if not self._fs.exists(path):
            raise FileNotFoundError(f"artifact not found: {uri}")
        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="mlops-artifacts-"))
            weakref.finalize(self, shutil.rmtree, self._cache_dir, True)
        key = hashlib.sha256(uri.encode()).hexdigest()[:24]
        local = self._cache_dir / key / uri.rsplit("/", 1)[-1]
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            self._fs.get(path, str(local), recursive=bool(self._fs.isdir(path)))
        return local

    def digest(self, uri: str) -> str:
        """SHA-256 (hex) of the artifact's bytes; for a folder, of its relative paths and files."""
        path = self._path(uri)
        if not self._fs.exists(path):
            raise FileNotFoundError(f"artifact not found: {uri}")
        if not self._fs.isdir(path):
            return self._file_digest(path)
        combined = hashlib.sha256()
        prefix = path.rstrip("/") + "/"
        for member in sorted(str(p) for p in self._fs.find(path)):
            relative = member[len(prefix) :] if member.startswith(prefix) else member
            combined.update(f"{relative}\0{self._file_digest(member)}\n".encode())
        return combined.hexdigest()

    def _file_digest(self, path: str) -> str:
        sha = hashlib.sha256()
        with self._fs.open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha.update(chunk)
        return sha.hexdigest()
