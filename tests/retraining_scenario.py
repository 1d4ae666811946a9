"""The retraining loop as a team runs it, against a service in its own process: a model trained
on yesterday's data serves; shifted traffic and its labels arrive; a policy retrains, compares,
rolls out and promotes (or not). Shared by the end-to-end tests and ``bench/retraining.py``.

Data: four features ``x0..x3``. The *old* world is ``x ~ N(0, 1)`` labelled ``x0 + x1 > 0``;
the *shifted* world moves ``x0`` to ``N(1.5, 1)`` and ``x2`` to ``N(-1, 1)`` (drift a report
sees), labelled either by a *new* concept (``x0 - x1 > 1.5``: the old model is near chance, a
retrained one near perfect) or by the *old* one (a retrained model is no better).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

FEATURES = ("x0", "x1", "x2", "x3")
Concept = Literal["old", "new"]


def rows(
    n: int, seed: int, *, shifted: bool, concept: Concept
) -> tuple[list[dict[str, float]], list[int]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n, len(FEATURES)))
    if shifted:
        x[:, 0] += 1.5
        x[:, 2] -= 1.0
    if concept == "old":
        labels = (x[:, 0] + x[:, 1] > 0).astype(int)
    else:
        labels = (x[:, 0] - x[:, 1] > 1.5).astype(int)
    records = [
        {name: round(float(v), 4) for name, v in zip(FEATURES, row, strict=True)} for row in x
    ]
    return records, [int(label) for label in labels]


def write_training_csv(path: Path, n: int = 400, seed: int = 1) -> Path:
    records, labels = rows(n, seed, shifted=False, concept="old")
    lines = [",".join([*FEATURES, "target"])]
    lines += [
        ",".join([*(str(r[name]) for name in FEATURES), str(label)])
        for r, label in zip(records, labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Loop:
    """The calls a CI job makes, with waits that fail loudly."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def ok(self, response: httpx.Response, *codes: int) -> Any:
        assert response.status_code in (codes or (200,)), response.text
        return response.json() if response.content else None

    def until(self, what: str, check: Any, timeout: float = 120.0, every: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(every)

    def train_first_version(self, dataset: Path, model: str) -> str:
        job = self.ok(
            self.client.post(
                "/api/v1/training/jobs",
                json={
                    "dataset": str(dataset),
                    "estimator": "logistic_regression",
                    "n_trials": 2,
                    "cv_folds": 3,
                    "model_name": model,
                },
            ),
            202,
        )
        return str(job["id"])

    def job_version(self, job_id: str) -> str:
        def done() -> Any:
            job = self.ok(self.client.get(f"/api/v1/training/jobs/{job_id}"))
            assert job["status"] not in ("failed", "cancelled"), job
            return job["result"]["model_version"] if job["status"] == "succeeded" else None

        return str(self.until(f"training job {job_id}", done, timeout=180))

    def deploy(self, name: str, model: str, version: str, canary: dict[str, Any]) -> None:
        self.ok(
            self.client.post(
                "/api/v1/deployments",
                json={
                    "name": name,
                    "model": {"name": model, "version": version},
                    "strategy": "canary",
                    "settings": {"canary": canary},
                },
            ),
            202,
        )

        def ready() -> bool:
            return bool(self.ok(self.client.get(f"/api/v1/deployments/{name}"))["state"] == "ready")

        self.until(f"deployment {name} ready", ready, timeout=120)

    def serve_labelled(
        self, deployment: str, records: list[dict[str, float]], labels: list[int], batch: int = 10
    ) -> int:
        """Predict in batches, then report each request's truth; the requests made."""
        truth: list[dict[str, Any]] = []
        for start in range(0, len(records), batch):
            answer = self.ok(
                self.client.post(
                    f"/api/v1/deployments/{deployment}/predict",
                    json={"instances": records[start : start + batch]},
                )
            )
            truth.append(
                {"request_id": answer["request_id"], "labels": labels[start : start + batch]}
            )
        self.wait_logged(deployment, len(truth))
        accepted = self.ok(
            self.client.post("/api/v1/monitoring/ground-truth", json={"items": truth})
        )
        assert accepted["matched"] == len(truth), accepted
        return len(truth)

    def wait_logged(self, deployment: str, at_least: int) -> None:
        def logged() -> bool:
            page = self.ok(
                self.client.get("/api/v1/monitoring/predictions", params={"deployment": deployment})
            )
            return int(page["total"]) >= at_least

        self.until(f"{at_least} logged predictions of {deployment}", logged, timeout=60)

    def events(self, policy: str) -> list[dict[str, Any]]:
        page = self.ok(self.client.get("/api/v1/retraining/events", params={"policy": policy}))
        return list(page["items"])

    def finished(self, event_id: str, timeout: float = 300.0) -> dict[str, Any]:
        def outcome() -> Any:
            event = self.ok(self.client.get(f"/api/v1/retraining/events/{event_id}"))
            return event if event["finished_at"] else None

        return dict(self.until(f"retraining {event_id} to finish", outcome, timeout=timeout))


@contextmanager
def traffic(base_url: str, headers: dict[str, str], deployment: str, seed: int) -> Iterator[None]:
    """Unlabelled shifted requests, one row each, for a canary's analysis to judge."""
    records, _ = rows(500, seed, shifted=True, concept="new")
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
            i = 0
            while not stop.is_set():
                client.post(
                    f"/api/v1/deployments/{deployment}/predict",
                    json={"instances": [records[i % len(records)]]},
                )
                i += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


CANARY = {
    "steps": [50, 100],
    "analysis_seconds": 1.0,
    "min_requests": 10,
    "max_inconclusive_steps": 5,
}


def policy_body(
    name: str, deployment: str, *, training: dict[str, Any], triggers: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "deployment": deployment,
        "training": {"n_trials": 2, "cv_folds": 3, **training},
        "data_window_hours": 1,
        "triggers": triggers,
        "comparison": {"metric": "accuracy", "min_rows": 60, "holdout": {"share": 0.3}},
        "promotion": {"mode": "automatic", "strategy": "canary", "settings": {"canary": CANARY}},
        "cooldown_minutes": 30,
        "max_runs_per_day": 5,
    }
