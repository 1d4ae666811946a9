"""Time from a retraining trigger to a promoted champion, and the share of each stage.

Run: ``.venv/bin/python -m bench retraining``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.api_overhead import BOOTSTRAP_KEY, Store
from bench.common import ROOT, machine_info, record, utc_now, write_results
from bench.pipeline_overhead import Service
from mlops.monitoring.labelled import LabelledQuery, labelled_uri
from tests.retraining_scenario import (
    CANARY,
    Loop,
    policy_body,
    rows,
    traffic,
    write_training_csv,
)

ROUNDS = 3
LABELLED_ROWS = 400
EVALUATION_SECONDS = 1.0  # the controller's interval (the default is 30 s)
KEY = {"X-API-Key": BOOTSTRAP_KEY}
COLUMNS = ("loop", "by hand", "ratio")
# (stage, the link that opens it, the link that closes it)
STAGES = (
    ("submit", "trigger", "pipeline_run"),
    ("training", "pipeline_run", "model_version"),
    ("comparison", "model_version", "comparison"),
    ("rollout", "comparison", "outcome"),
)

DESCRIPTION = """\
The end-to-end scenario of `tests/e2e/test_retraining_loop.py` in a service on the embedded
default (SQLite, local backend, in-process serving; retraining controller interval 1 s): a
logistic model trained on the old data serves; 400 shifted, relabelled rows arrive with their
ground truth; a drift report flags them and the policy's `data_drift` trigger fires. **Loop**
is the time from the trigger firing to the challenger being the champion (the retraining's
`seconds_to_promotion`: a 2-trial, 3-fold search on the window's labelled requests, McNemar on
the held-out 30 %, a 2-step canary with 1 s of analysis per step under live traffic, the alias
move). *By hand* is the same work as a CI script drives it through the API on a twin
deployment: submit the training job on the same `labelled://` window, wait, roll the version
out with the same canary, wait, move the alias (no statistical comparison: there is no API for
one by hand). The stage rows split the loop by its lineage links' timestamps; *detection* is
from the drift report to the trigger, outside the loop's time. Median of 3 rounds.
"""


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stages(event: dict[str, Any]) -> dict[str, float]:
    links = {link["stage"]: _at(link["created_at"]) for link in event["chain"]}
    return {name: (links[end] - links[start]).total_seconds() for name, start, end in STAGES}


def _first_version(loop: Loop, dataset: Path, model: str, deployment: str) -> None:
    assert loop.job_version(loop.train_first_version(dataset, model)) == "1"
    loop.deploy(deployment, model, "1", {})


def loop_round(loop: Loop, url: str, dataset: Path, index: int) -> dict[str, Any]:
    deployment, model = f"churn{index}", f"churn{index}-model"
    _first_version(loop, dataset, model, deployment)
    loop.ok(
        loop.client.put(
            f"/api/v1/monitoring/drift/{deployment}/reference",
            json={"source": {"dataset": {"uri": str(dataset), "label_column": "target"}}},
        ),
        201,
    )
    trigger = {"type": "data_drift", "min_drifted_features": 1}
    policy = f"guard{index}"
    body = policy_body(
        policy, deployment, training={"estimator": "logistic_regression"}, triggers=[trigger]
    )
    loop.ok(loop.client.post("/api/v1/retraining/policies", json=body), 201)
    records, labels = rows(LABELLED_ROWS, 100 + index, shifted=True, concept="new")
    loop.serve_labelled(deployment, records, labels)
    with traffic(url, KEY, deployment, seed=200 + index):
        report = loop.ok(loop.client.post(f"/api/v1/monitoring/drift/{deployment}/reports"), 201)
        started = loop.until("the trigger", lambda: loop.events(policy), every=0.05)
        event = loop.finished(started[0]["id"])
    assert event["status"] == "promoted", event
    return {
        "total_s": float(event["seconds_to_promotion"]),
        "stages_s": _stages(event),
        "detection_s": (_at(event["created_at"]) - _at(report["created_at"])).total_seconds(),
        "comparison": {k: event["comparison"][k] for k in ("rows", "improvement", "decision")}
        | {"p_value": event["comparison"]["mcnemar"]["p_value"]},
    }


def by_hand_round(loop: Loop, url: str, dataset: Path, index: int) -> float:
    deployment, model = f"hand{index}", f"hand{index}-model"
    _first_version(loop, dataset, model, deployment)
    records, labels = rows(LABELLED_ROWS, 100 + index, shifted=True, concept="new")
    loop.serve_labelled(deployment, records, labels)
    with traffic(url, KEY, deployment, seed=300 + index):
        began = time.monotonic()
        now = datetime.now(UTC)
        window = LabelledQuery(deployment, now - timedelta(hours=1), now, "train", 0.3)
        job = loop.ok(
            loop.client.post(
                "/api/v1/training/jobs",
                json={
                    "dataset": labelled_uri(window),
                    "estimator": "logistic_regression",
                    "n_trials": 2,
                    "cv_folds": 3,
                    "model_name": model,
                },
            ),
            202,
        )
        version = loop.job_version(str(job["id"]))
        loop.ok(
            loop.client.patch(
                f"/api/v1/deployments/{deployment}",
                json={
                    "model": {"name": model, "version": version},
                    "strategy": "canary",
                    "settings": {"canary": CANARY},
                },
            ),
            202,
        )

        def promoted() -> bool:
            state = loop.ok(loop.client.get(f"/api/v1/deployments/{deployment}"))
            assert state["state"] != "failed", state
            top = [v for v in state["variants"] if v["weight"] == 100]
            return state["rollout"] is None and [v["model_version"] for v in top] == [version]

        loop.until("the hand-driven canary", promoted, timeout=120, every=0.05)
        loop.ok(
            loop.client.post(
                f"/api/v1/training/models/{model}/aliases",
                json={"alias": "champion", "version": version},
            )
        )
        return time.monotonic() - began


def main() -> None:
    print("retraining: trigger to promoted champion, against the same steps by hand", flush=True)
    store = Store("SQLite + in-process", embedded=True)
    loops: list[dict[str, Any]] = []
    by_hand: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-retraining-") as tmp:
        root = Path(tmp)
        dataset = write_training_csv(root / "old.csv")
        extra = {"MLOPS_RETRAINING_EVALUATION_SECONDS": str(EVALUATION_SECONDS)}
        with (
            Service(store, root, extra) as service,
            httpx.Client(base_url=service.base_url, headers=KEY, timeout=60) as client,
        ):
            loop = Loop(client)
            for index in range(ROUNDS):
                loops.append(loop_round(loop, service.base_url, dataset, index))
                by_hand.append(by_hand_round(loop, service.base_url, dataset, index))
                print(
                    f"  round {index + 1}: loop {loops[-1]['total_s']:.1f} s, "
                    f"by hand {by_hand[-1]:.1f} s, stages {loops[-1]['stages_s']}",
                    flush=True,
                )
    records = _records(loops, by_hand, store.label)
    stamp, machine = utc_now(), machine_info()
    for item in records:
        item.update(machine=machine, date=stamp, notes=_notes(loops))
    path = write_results("retraining", records)
    print(f"retraining: wrote {path.relative_to(ROOT)}")


def _records(loops: list[dict[str, Any]], by_hand: list[float], store: str) -> list[dict[str, Any]]:
    total = statistics.median(r["total_s"] for r in loops)
    rows_out = [
        record(
            "trigger → promoted champion",
            store,
            f"median of {ROUNDS} rounds",
            "s",
            total,
            statistics.median(by_hand),
            compare="ratio",
            runs={"loop_s": [r["total_s"] for r in loops], "by_hand_s": by_hand},
        )
    ]
    for name, _, _ in STAGES:
        seconds = statistics.median(r["stages_s"][name] for r in loops)
        rows_out.append(
            record(
                f"stage: {name}",
                store,
                f"median seconds; {100 * seconds / total:.0f} % of the loop",
                "s",
                seconds,
                runs=[r["stages_s"][name] for r in loops],
            )
        )
    detection = statistics.median(r["detection_s"] for r in loops)
    rows_out.append(
        record(
            "detection: drift report → trigger",
            store,
            f"median; controller interval {EVALUATION_SECONDS:g} s",
            "s",
            detection,
            runs=[r["detection_s"] for r in loops],
        )
    )
    return rows_out


def _notes(loops: list[dict[str, Any]]) -> list[str]:
    comparisons = [r["comparison"] for r in loops]
    worst = max(c["p_value"] for c in comparisons)
    return [
        f"Every round promoted: McNemar p ≤ {worst:.2g} on "
        f"{min(c['rows'] for c in comparisons)} to {max(c['rows'] for c in comparisons)} held-out "
        "rows.",
        "The rollout stage is bounded below by the canary's analysis windows (2 steps x "
        f"{CANARY['analysis_seconds']:g} s) and the new variant's load; training by the "
        "step subprocess's imports and the model's logging to MLflow.",
        "Per-round figures are in the result file (`runs`); the first round's training is the "
        "slowest.",
    ]


if __name__ == "__main__":
    sys.exit(main())
