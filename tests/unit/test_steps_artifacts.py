"""ArtifactStore on a local folder and on fsspec's memory filesystem."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from mlops.steps.artifacts import ArtifactStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    return ArtifactStore(f"memory://test-{uuid.uuid4().hex}")


def test_uris_are_root_run_step_name(store: ArtifactStore) -> None:
    uri = store.uri_for("run-1", "validate", "report.json")
    assert uri == f"{store.root}/run-1/validate/report.json"
    assert store.owns(uri)
    assert store.uri_for("r", "s", "model/weights.bin").endswith("/r/s/model/weights.bin")


@pytest.mark.parametrize(
    ("run_id", "step", "name"),
    [("", "s", "n"), ("r/x", "s", "n"), ("r", "..", "n"), ("r", "s", "../n"), ("r", "s", "a//b")],
)
def test_invalid_components_are_refused(
    store: ArtifactStore, run_id: str, step: str, name: str
) -> None:
    with pytest.raises(ValueError, match="invalid artifact"):
        store.uri_for(run_id, step, name)


def test_put_open_digest_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"some bytes\n" * 1000
    uri = store.put_bytes(store.uri_for("r", "s", "blob.bin"), data)
    assert store.exists(uri)
    with store.open(uri) as handle:
        assert handle.read() == data
    assert store.digest(uri) == hashlib.sha256(data).hexdigest()
    local = store.local_path(uri)
    assert local.read_bytes() == data

    source = tmp_path / "source.txt"
    source.write_text("from a file")
    copied = store.put_file(store.uri_for("r", "s", "copy.txt"), source)
    with store.open(copied, "rb") as handle:
        assert handle.read() == b"from a file"

    written = store.uri_for("r", "s", "written.txt")
    with store.open(written, "wb") as handle:
        handle.write(b"streamed")
    assert store.digest(written) == hashlib.sha256(b"streamed").hexdigest()


def test_overwrite_replaces_content_and_digest(store: ArtifactStore) -> None:
    uri = store.uri_for("r", "s", "x")
    store.put_bytes(uri, b"one")
    first = store.digest(uri)
    store.put_bytes(uri, b"two")
    assert store.digest(uri) != first
    assert store.digest(uri) == hashlib.sha256(b"two").hexdigest()


def test_digests_are_stable_and_content_addressed(tmp_path: Path) -> None:
    local = ArtifactStore(str(tmp_path / "a"))
    memory = ArtifactStore(f"memory://stable-{uuid.uuid4().hex}")
    digests = {
        s.digest(s.put_bytes(s.uri_for(run, "s", "f"), b"same"))
        for s in (local, memory)
        for run in ("r1", "r2")
    }
    assert digests == {hashlib.sha256(b"same").hexdigest()}


def test_folder_digest_covers_names_and_content(store: ArtifactStore) -> None:
    store.put_bytes(store.uri_for("r", "s", "model/a.txt"), b"a")
    store.put_bytes(store.uri_for("r", "s", "model/b.txt"), b"b")
    folder = store.uri_for("r", "s", "model")
    first = store.digest(folder)
    assert first == store.digest(folder)
    store.put_bytes(store.uri_for("r", "s", "model/b.txt"), b"changed")
    assert store.digest(folder) != first
    assert (store.local_path(folder) / "a.txt").read_bytes() == b"a"


def test_owns_only_uris_inside_the_root(store: ArtifactStore) -> None:
    assert not store.owns(store.root)
    assert not store.owns(store.root + "-other/r/s/x")
    assert not store.owns(store.root + "/r/../../etc/passwd")
    assert not store.owns(3)
    assert not store.owns(None)
    assert not store.owns("sklearn://iris")
    with pytest.raises(ValueError, match="not an artifact URI"):
        store.put_bytes("file:///tmp/elsewhere", b"x")


def test_missing_artifacts_raise_file_not_found(store: ArtifactStore) -> None:
    uri = store.uri_for("r", "s", "nothing")
    assert not store.exists(uri)
    with pytest.raises(FileNotFoundError):
        store.digest(uri)
    with pytest.raises(FileNotFoundError):
        store.local_path(uri)


def test_local_roots_normalise_to_the_same_file_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    by_relative = ArtifactStore("artifacts")
    by_absolute = ArtifactStore(str(tmp_path / "artifacts") + "/")
    by_uri = ArtifactStore(f"file://{tmp_path}/artifacts")
    assert by_relative.root == by_absolute.root == by_uri.root == f"file://{tmp_path}/artifacts"
    uri = by_relative.put_bytes(by_relative.uri_for("r", "s", "x.txt"), b"x")
    assert by_uri.local_path(uri) == tmp_path / "artifacts" / "r" / "s" / "x.txt"
    assert [p.name for p in (tmp_path / "artifacts" / "r" / "s").iterdir()] == ["x.txt"]
