"""The Airflow backend's pure parts: plans on disk, results from XCom, failure reasons."""

from __future__ import annotations

import json
from pathlib import Path

from mlops.backends.airflow import failure_reason, result_of, write_plan


def test_a_plan_is_written_whole_and_only_when_it_changed(tmp_path: Path) -> None:
    document = {"dag_id": "mlops__p__v1", "description": "", "steps": [{"name": "a"}]}
    write_plan(tmp_path / "specs", document)
    path = tmp_path / "specs" / "mlops__p__v1.json"
    assert json.loads(path.read_text()) == document
    before = path.stat().st_mtime_ns
    write_plan(tmp_path / "specs", document)
    assert path.stat().st_mtime_ns == before  # the dag-processor need not parse it again
    write_plan(tmp_path / "specs", {**document, "description": "changed"})
    assert json.loads(path.read_text())["description"] == "changed"
    assert [p.name for p in (tmp_path / "specs").iterdir()] == ["mlops__p__v1.json"]


def test_results_come_as_json_text_or_objects() -> None:
    assert result_of('{"ok": true, "outputs": {"x": 1}}') == {"ok": True, "outputs": {"x": 1}}
    assert result_of({"ok": True}) == {"ok": True}
    assert result_of(None) == {}


def test_the_step_s_own_error_wins_over_airflow_s_lines() -> None:
    log = "\n".join(
        [
            "[2026-11-27T20:24:45+00:00] Running command: ['bash', '-c', '...']",
            '[2026-11-27T20:24:46+00:00] {"ok": false, "error": "only 569 rows, need 100000"}',
            "[2026-11-27T20:24:46+00:00] Command exited with return code 1",
            "[2026-11-27T20:24:46+00:00] Task failed with exception",
            "[2026-11-27T20:24:46+00:00] ::group::Post Execute",
            "[2026-11-27T20:24:46+00:00] ::endgroup::",
        ]
    )
    assert failure_reason(log) == "only 569 rows, need 100000"


def test_a_timeout_and_an_unexplained_failure_are_named() -> None:
    timed_out = (
        "[t] Output:\n[t] Process timed out\n[t] Task failed with exception\n[t] ::endgroup::"
    )
    assert failure_reason(timed_out).startswith("timed out")  # type: ignore[union-attr]
    assert failure_reason("[t] something broke\n[t] ::endgroup::\n") == "something broke"
    assert failure_reason("") is None
