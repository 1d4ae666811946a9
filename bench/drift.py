"""Drift detection at 1,000,000 rows x 50 features: ``mlops.monitoring`` against Evidently's
data-drift preset, on the same data in the same run.

Ours compares the current window with a reference profile built once and stored (JSON, read
back before every comparison); Evidently's ``DataDriftPreset`` compares the current window with
the reference rows themselves. Evidently 0.7 does not import beside pandas 3, so it runs in a
venv of its own (``<repo>/.bench/evidently/venv``, gitignored, installed on first use under a
file lock) and gets the data as Parquet files; each of its runs is a fresh process.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, Record, machine_info, record, utc_now, venv_python, write_results

ROWS = 1_000_000
SWEEP_ROWS = (10_000, 100_000, 1_000_000)
NUMERIC = 40
CATEGORICAL = 10
SEED = 20_260_101
REPEATS = 5
TARGET_SECONDS = 2.0
TARGET_MEMORY_MIB = 1024.0
TARGET_SPEEDUP = 100.0
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.23", "pandas<3", "pyarrow")
EVIDENTLY_DIR = ROOT / ".bench" / "evidently"
READY_MARKER = ".mlops-evidently-ready"
INSTALL_TIMEOUT = 900.0
EVIDENTLY_TIMEOUT = 3600.0
STORE = "DataFrame in memory"
COLUMNS = ("ours", "Evidently 0.7.23", "ratio")

# The known shifts of the current window (everything else is drawn as in the reference).
MEAN_SHIFT = "num_03"  # normal: mean + 0.25 standard deviations
SCALE_CHANGE = "num_14"  # lognormal: sigma 0.5 -> 0.65
TAIL_CHANGE = "num_07"  # normal: 4 % of the rows moved 4 standard deviations up
COUNT_SHIFT = "num_33"  # Poisson: lambda 4 -> 4.6
FREQUENCY_SHIFT = "cat_03"  # 8 categories: 7 points of share from the top one to the rarest
NEW_CATEGORY = "cat_05"  # 20 categories: a value the reference never had, in 4 % of the rows
SHIFTED = (MEAN_SHIFT, TAIL_CHANGE, SCALE_CHANGE, COUNT_SHIFT, FREQUENCY_SHIFT, NEW_CATEGORY)
TINY_SHIFT = "num_05"  # normal: mean + 0.02 standard deviations: significant, negligible
CARDINALITIES = (2, 3, 5, 8, 12, 20, 50, 100, 300, 1000)

DESCRIPTION = f"""\
Drift detection on **{ROWS:,} rows x {NUMERIC + CATEGORICAL} features** ({NUMERIC} numeric:
normal, lognormal, uniform and integer-valued (Poisson, binomial, uniform integers); {CATEGORICAL}
categorical strings of {", ".join(map(str, CARDINALITIES))} categories with Zipf-like
frequencies), a reference and a current window drawn independently with seed {SEED}, the
current one with six known shifts:

- `{MEAN_SHIFT}`: mean + 0.25 sd (normal);
- `{SCALE_CHANGE}`: lognormal sigma 0.5 → 0.65;
- `{TAIL_CHANGE}`: 4 % of the rows moved 4 sd up (a tail change, mostly outside what decile
  PSI sees);
- `{COUNT_SHIFT}`: Poisson λ 4 → 4.6 (integer values);
- `{FREQUENCY_SHIFT}`: 7 points of share moved from the most to the least frequent of 8
  categories (Jensen-Shannon distance 0.11 in base 2, PSI 0.07: "stable" by the PSI rule of
  thumb, so subtle, yet a real change of the mix);
- `{NEW_CATEGORY}`: a category the reference never had, in 4 % of the rows.

`{TINY_SHIFT}` moves by 0.02 sd: significant at this size (KS p ~ 1e-30) but too small to matter,
so it counts as not shifted.

- **ours**: `mlops.monitoring.compare` against the reference profile (built once: its time is
  its own row; then stored as JSON and read back, so each comparison starts from a freshly
  loaded profile); default thresholds, Benjamini-Hochberg at 0.05; in a fresh process that
  reads the current window from Parquet. Memory: the growth of the process's peak RSS during
  its first comparison (the high-water mark reset through `/proc/self/clear_refs` just
  before; scipy imported before), which counts numpy, pandas and Arrow alike; tracemalloc's
  peak is shown beside it. Time: the median of the next {REPEATS} comparisons, each on a
  profile just read back from JSON.
- **Evidently**: `Report([DataDriftPreset()], include_tests=True).run(current, reference)`
  with a `DataDefinition` naming the same numeric and categorical columns, in a fresh process
  of its own venv, reading the same data from Parquet. Time: `run()` alone, measured inside
  the process (its import and the Parquet read are in the notes); memory: the growth of that
  process's peak RSS during `run()`, and its whole peak in the notes. Its default methods at
  this size: Wasserstein distance / reference standard deviation ≥ 0.1 for numeric columns
  with more than 5 values, Jensen-Shannon distance ≥ 0.1 with natural logarithms (0.12 in
  base 2) for categorical ones and numeric ones with at most 5 values.
- **flags**: a feature counts as right when its verdict matches the truth (flagged if and only
  if shifted); the target is every shifted feature flagged and no other.
- **sweep**: the same for the first 10,000 and 100,000 rows of both windows (ours with a profile
  of the reference's first rows), to show how time grows with rows. Ours is near 0.1 s at both:
  up to an effective size of 10,000 (as `scipy.stats.ks_2samp` does) the KS p-value comes from
  the exact distribution (`kstwo`), about 0.7 ms a feature, and from Kolmogorov's limit above;
  from 100,000 rows on, time grows with the rows.
"""


# --------------------------------------------------------------------------- data


def _zipf(size: int, exponent: float = 0.8) -> np.ndarray:
    weights = 1 / np.arange(1, size + 1) ** exponent
    return weights / weights.sum()


def _numeric(index: int, rows: int, rng: np.random.Generator, current: bool) -> np.ndarray:
    name = f"num_{index:02d}"
    if index < 10:  # normal, of varied location and scale
        location, scale = 1.5 * index - 5, 0.5 + 0.25 * index
        shift = {MEAN_SHIFT: 0.25, TINY_SHIFT: 0.02}.get(name, 0.0) if current else 0.0
        values = rng.normal(location + shift * scale, scale, rows)
        if current and name == TAIL_CHANGE:
            values[rng.random(rows) < 0.04] += 4 * scale
        return values
    if index < 20:  # lognormal
        sigma = 0.4 + 0.05 * (index - 10)
        if current and name == SCALE_CHANGE:
            sigma *= 1.3
        return rng.lognormal(0.1 * (index - 10), sigma, rows)
    if index < 30:  # uniform
        return rng.uniform(-index, 2 * index + 1, rows)
    if index < 34:  # Poisson counts
        rate = (1.0, 3.0, 8.0, 4.0)[index - 30]
        return rng.poisson(rate * (1.15 if current and name == COUNT_SHIFT else 1.0), rows)
    if index < 37:  # binomial counts
        return rng.binomial((4, 10, 30)[index - 34], 0.3, rows)
    return rng.integers(0, (10, 100, 1000)[index - 37], rows)  # uniform integers


def _categorical(index: int, rows: int, rng: np.random.Generator, current: bool) -> np.ndarray:
    name = f"cat_{index:02d}"
    size = CARDINALITIES[index]
    labels = np.array([f"{name}_v{k:04d}" for k in range(size)], dtype=object)
    weights = _zipf(size)
    if current and name == FREQUENCY_SHIFT:
        weights[0] -= 0.07
        weights[-1] += 0.07
    values = labels[rng.choice(size, rows, p=weights)]
    if current and name == NEW_CATEGORY:
        values[rng.random(rows) < 0.04] = f"{name}_new"
    return values


def generate(rows: int, *, current: bool, seed: int = SEED) -> pd.DataFrame:
    """One window; the same seed and arguments give the same frame."""
    rng = np.random.default_rng([seed, int(current)])
    columns: dict[str, Any] = {}
    for index in range(NUMERIC):
        columns[f"num_{index:02d}"] = _numeric(index, rows, rng, current)
    for index in range(CATEGORICAL):
        columns[f"cat_{index:02d}"] = _categorical(index, rows, rng, current)
    return pd.DataFrame(columns)


def write_windows(directory: Path, reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """The first rows of both windows, for every size of the sweep, as Parquet files."""
    for rows in SWEEP_ROWS:
        reference.iloc[:rows].to_parquet(directory / f"reference-{rows}.parquet", index=False)
        current.iloc[:rows].to_parquet(directory / f"current-{rows}.parquet", index=False)


# --------------------------------------------------------------------------- processes


def _memory_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB."""
    found: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class ProcessResult:
    output: dict[str, Any]
    wall_seconds: float  # spawn to exit
    peak_mib: float  # the whole process's peak RSS (wait4's ru_maxrss)
    stderr_tail: str = ""


def run_process(command: list[str], env: dict[str, str], timeout: float) -> ProcessResult:
    """Run ``command``, read the JSON of its last output line; wait4 gives its peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited {process.returncode}:\n{stderr[-3000:]}")
    lines = stdout.strip().splitlines()
    return ProcessResult(json.loads(lines[-1]), wall, usage.ru_maxrss / 1024, stderr[-1000:])


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["DO_NOT_TRACK"] = "1"  # Evidently's telemetry
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    return env


# --------------------------------------------------------------------------- ours


def ours_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: compare the current window with the stored profile. The first
    comparison is the one whose memory is measured (nothing freed yet for it to reuse); scipy,
    which ``compare`` imports on first use, is imported before it."""
    from scipy import special, stats  # noqa: F401

    from mlops.monitoring import ReferenceProfile, compare

    current = pd.read_parquet(spec["current"])
    stored = Path(spec["profile"]).read_text()
    profile = ReferenceProfile.from_dict(json.loads(stored))
    gc.collect()
    before = _memory_status()["VmRSS"]
    reset = _reset_peak()
    started = time.perf_counter()
    report = compare(profile, current)
    first = time.perf_counter() - started
    peak = _memory_status()["VmHWM"]
    times = []
    for _ in range(spec["repeats"]):
        profile = ReferenceProfile.from_dict(json.loads(stored))
        started = time.perf_counter()
        compare(profile, current)
        times.append(time.perf_counter() - started)
    profile = ReferenceProfile.from_dict(json.loads(stored))
    tracemalloc.start()
    compare(profile, current)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {
        "first_seconds": first,
        "seconds": times,
        "rss_before_mib": before,
        "rss_growth_mib": peak - before if reset else None,
        "tracemalloc_peak_mib": traced,
        "flagged": report.drifted_features,
        "dataset_drift": report.dataset_drift,
        "figures": {
            f.name: {"psi": f.psi, "wasserstein": f.wasserstein, "js": f.js, "ks": f.ks}
            for f in report.features
        },
    }


# --------------------------------------------------------------------------- Evidently

EVIDENTLY_CHILD = r"""
import json, sys, time
from pathlib import Path

def memory():
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found

started = time.perf_counter()
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
imported = time.perf_counter()
spec = json.loads(sys.argv[1])
reference = pd.read_parquet(spec["reference"])
current = pd.read_parquet(spec["current"])
loaded = time.perf_counter()
before = memory()["VmRSS"]
try:
    Path("/proc/self/clear_refs").write_text("5")
    reset = True
except OSError:
    reset = False
began = time.perf_counter()
definition = DataDefinition(
    numerical_columns=spec["numeric"], categorical_columns=spec["categorical"]
)
snapshot = Report([DataDriftPreset()], include_tests=True).run(
    Dataset.from_pandas(current, data_definition=definition),
    Dataset.from_pandas(reference, data_definition=definition),
)
ran = time.perf_counter()
peak = memory()["VmHWM"]
document = snapshot.dict()
methods, flagged = {}, []
for metric in document["metrics"]:
    config = metric.get("config", {})
    if config.get("type", "").endswith("ValueDrift"):
        methods[config["column"]] = [config.get("method"), config.get("threshold"), metric["value"]]
for test in document.get("tests", []):
    params = test.get("metric_config", {}).get("params", {})
    if params.get("type", "").endswith("ValueDrift") and test.get("status") == "FAIL":
        flagged.append(params["column"])
print(json.dumps({
    "import_seconds": imported - started,
    "load_seconds": loaded - imported,
    "seconds": ran - began,
    "dict_seconds": time.perf_counter() - ran,
    "rss_before_mib": before,
    "rss_growth_mib": peak - before if reset else None,
    "flagged": flagged,
    "methods": methods,
}))
"""


def evidently_python() -> tuple[Path, float | None]:
    """The interpreter of the Evidently venv (installed on first use) and the install time."""
    return venv_python(EVIDENTLY_DIR, EVIDENTLY_REQUIREMENTS, READY_MARKER, INSTALL_TIMEOUT)


# --------------------------------------------------------------------------- the run


@dataclass
class Side:
    """One tool at one size."""

    seconds: float  # the median (ours) or the single run (Evidently) of the computation
    rss_growth_mib: float | None
    flagged: list[str]
    process: ProcessResult
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_mib(self) -> float:
        """The peak RSS growth; tracemalloc's peak where the peak RSS could not be reset."""
        if self.rss_growth_mib is not None:
            return float(self.rss_growth_mib)
        return float(self.process.output.get("tracemalloc_peak_mib", 0.0))

    @property
    def right(self) -> int:
        names = [f"num_{i:02d}" for i in range(NUMERIC)] + [
            f"cat_{i:02d}" for i in range(CATEGORICAL)
        ]
        return sum((name in self.flagged) == (name in SHIFTED) for name in names)

    @property
    def missed(self) -> list[str]:
        return sorted(set(SHIFTED) - set(self.flagged))

    @property
    def false_flags(self) -> list[str]:
        return sorted(set(self.flagged) - set(SHIFTED))

    @property
    def correct(self) -> bool:
        return not self.missed and not self.false_flags


@dataclass
class SizeFigures:
    rows: int
    build_seconds: float
    profile_bytes: int
    ours: Side
    evidently: Side


def measure_size(
    rows: int, directory: Path, reference: pd.DataFrame, evidently: Path
) -> SizeFigures:
    from mlops.monitoring import ReferenceProfile

    window = reference if rows == len(reference) else reference.iloc[:rows]
    started = time.perf_counter()
    profile = ReferenceProfile.build(window)
    build_seconds = time.perf_counter() - started
    profile_path = directory / f"profile-{rows}.json"
    profile_path.write_text(json.dumps(profile.to_dict()))
    numeric = [f"num_{i:02d}" for i in range(NUMERIC)]
    categorical = [f"cat_{i:02d}" for i in range(CATEGORICAL)]
    env = _child_env()
    ours_spec = {
        "current": str(directory / f"current-{rows}.parquet"),
        "profile": str(profile_path),
        "repeats": REPEATS,
    }
    print(f"drift: ours at {rows:,} rows", flush=True)
    mine = run_process(
        [sys.executable, "-m", "bench.drift", "--ours", json.dumps(ours_spec)], env, 600.0
    )
    evidently_spec = {
        "reference": str(directory / f"reference-{rows}.parquet"),
        "current": str(directory / f"current-{rows}.parquet"),
        "numeric": numeric,
        "categorical": categorical,
    }
    print(f"drift: Evidently at {rows:,} rows", flush=True)
    theirs = run_process(
        [str(evidently), "-c", EVIDENTLY_CHILD, json.dumps(evidently_spec)],
        env,
        EVIDENTLY_TIMEOUT,
    )
    return SizeFigures(
        rows=rows,
        build_seconds=build_seconds,
        profile_bytes=profile_path.stat().st_size,
        ours=Side(
            seconds=statistics.median(mine.output["seconds"]),
            rss_growth_mib=mine.output["rss_growth_mib"],
            flagged=mine.output["flagged"],
            process=mine,
        ),
        evidently=Side(
            seconds=theirs.output["seconds"],
            rss_growth_mib=theirs.output["rss_growth_mib"],
            flagged=theirs.output["flagged"],
            process=theirs,
        ),
    )


# --------------------------------------------------------------------------- records


def _record(
    name: str, figure: str, unit: str, value: float, baseline: float | None = None, **more: Any
) -> Record:
    return record(name, STORE, figure, unit, value, baseline, **more)


def records_of(sizes: list[SizeFigures]) -> list[Record]:
    full = next(s for s in sizes if s.rows == ROWS)
    ours, theirs = full.ours, full.evidently
    name = f"{ROWS:,} rows x {NUMERIC + CATEGORICAL} features"
    speedup = theirs.seconds / ours.seconds
    records = [
        _record(
            name,
            "compare with the reference (ours: against the stored profile; Evidently: run())",
            "s",
            ours.seconds,
            theirs.seconds,
            compare="ratio",
            target=f"≤ {TARGET_SECONDS:g} s",
            met=ours.seconds <= TARGET_SECONDS,
            runs={
                "ours_seconds": [round(s, 4) for s in ours.process.output["seconds"]],
                "evidently_seconds": round(theirs.seconds, 3),
            },
        ),
        _record(
            name,
            "speed-up (Evidently's time / ours)",
            "x",
            speedup,
            target=f"≥ {TARGET_SPEEDUP:g}x",
            met=speedup >= TARGET_SPEEDUP,
        ),
        _record(
            name,
            "peak memory added during the comparison (growth of peak RSS)",
            "MiB",
            ours.memory_mib,
            theirs.rss_growth_mib,
            compare="ratio",
            target=f"≤ {TARGET_MEMORY_MIB:,.0f} MiB",
            met=ours.memory_mib <= TARGET_MEMORY_MIB,
            runs={
                "ours_tracemalloc_peak_mib": round(ours.process.output["tracemalloc_peak_mib"], 1),
                "ours_process_peak_mib": round(ours.process.peak_mib, 1),
                "evidently_process_peak_mib": round(theirs.process.peak_mib, 1),
            },
        ),
        _record(
            name,
            "peak memory of tracemalloc during the comparison (ours only)",
            "MiB",
            ours.process.output["tracemalloc_peak_mib"],
        ),
        _record(
            name,
            f"features classified right (the {len(SHIFTED)} shifted flagged, no other)",
            "%",
            100 * ours.right / (NUMERIC + CATEGORICAL),
            100 * theirs.right / (NUMERIC + CATEGORICAL),
            target="100 % (all shifted, no other)",
            met=ours.correct,
            runs={
                "truth": sorted(SHIFTED),
                "ours_flagged": sorted(ours.flagged),
                "evidently_flagged": sorted(theirs.flagged),
            },
        ),
        _record(
            name,
            "reference profile: build once (ours only)",
            "s",
            full.build_seconds,
            runs={"profile_json_bytes": full.profile_bytes},
        ),
    ]
    for size in sizes:
        records.append(
            _record(
                f"sweep: {size.rows:,} rows",
                "compare (ours median; Evidently run())",
                "ms",
                1000 * size.ours.seconds,
                1000 * size.evidently.seconds,
                compare="ratio",
                runs={
                    "ours_flagged": sorted(size.ours.flagged),
                    "evidently_flagged": sorted(size.evidently.flagged),
                    "ours_rss_growth_mib": size.ours.rss_growth_mib,
                    "evidently_rss_growth_mib": size.evidently.rss_growth_mib,
                    "build_seconds": round(size.build_seconds, 3),
                },
            )
        )
    return records


def _flags(side: Side) -> str:
    missed = ", ".join(f"`{n}`" for n in side.missed) or "none"
    wrong = ", ".join(f"`{n}`" for n in side.false_flags) or "none"
    return f"missed {missed}, flagged wrongly {wrong}"


def notes_of(
    sizes: list[SizeFigures],
    load: tuple[tuple[float, ...], tuple[float, ...]],
    install_seconds: float | None,
    generate_seconds: float,
) -> list[str]:
    full = next(s for s in sizes if s.rows == ROWS)
    ours, theirs = full.ours, full.evidently
    out = theirs.process.output
    figures = ours.process.output["figures"]
    methods = out["methods"]
    sweep = "; ".join(
        f"{s.rows:,} rows: ours {1000 * s.ours.seconds:,.1f} ms ({_flags(s.ours)}), Evidently "
        f"{s.evidently.seconds:,.1f} s ({_flags(s.evidently)})"
        for s in sizes
    )
    subtle = methods.get(FREQUENCY_SHIFT, [None, None, float("nan")])
    tail = methods.get(TAIL_CHANGE, [None, None, float("nan")])
    return [
        f"Load average (1, 5, 15 min) {', '.join(f'{x:.2f}' for x in load[0])} before the run "
        f"and {', '.join(f'{x:.2f}' for x in load[1])} after it, on {os.cpu_count()} cores "
        "shared with other jobs; every computation here is single-threaded (numpy, pandas and "
        "Arrow as called; `OMP_NUM_THREADS=1`).",
        f"At {ROWS:,} rows — ours: {_flags(ours)}; Evidently: {_flags(theirs)}. "
        f"`{FREQUENCY_SHIFT}`: our Jensen-Shannon distance (base 2) "
        f"{figures[FREQUENCY_SHIFT]['js']:.3f}, PSI {figures[FREQUENCY_SHIFT]['psi']:.3f}; "
        f"Evidently's {subtle[0]} {subtle[2]:.3f} against {subtle[1]} (natural logarithm). "
        f"`{TAIL_CHANGE}`: our normalised Wasserstein {figures[TAIL_CHANGE]['wasserstein']:.3f}, "
        f"decile PSI {figures[TAIL_CHANGE]['psi']:.3f}; Evidently's {tail[2]:.3f}. "
        f"`{TINY_SHIFT}` (0.02 sd): our normalised Wasserstein "
        f"{figures[TINY_SHIFT]['wasserstein']:.3f}, KS {figures[TINY_SHIFT]['ks']:.4f}.",
        f"Ours at {ROWS:,} rows: {', '.join(f'{s:.3f}' for s in ours.process.output['seconds'])} "
        f"s over {REPEATS} comparisons (median shown), after a first one of "
        f"{ours.process.output['first_seconds']:.3f} s whose memory is measured: peak RSS growth "
        f"{ours.memory_mib:.0f} MiB, tracemalloc peak "
        f"{ours.process.output['tracemalloc_peak_mib']:.0f} MiB; its process peaked at "
        f"{ours.process.peak_mib:,.0f} MiB with the current window loaded "
        f"({ours.process.output['rss_before_mib']:,.0f} MiB before comparing). Profile: "
        f"built in {full.build_seconds:.2f} s from the reference rows, "
        f"{full.profile_bytes / 1024:,.0f} KiB of JSON.",
        f"Evidently at {ROWS:,} rows: `run()` {theirs.seconds:,.1f} s, import "
        f"{out['import_seconds']:.1f} s, Parquet read {out['load_seconds']:.1f} s, "
        f"`snapshot.dict()` {out['dict_seconds']:.1f} s, whole process "
        f"{theirs.process.wall_seconds:,.1f} s; peak RSS growth during `run()` "
        f"{theirs.memory_mib:,.0f} MiB, whole process peak "
        f"{theirs.process.peak_mib:,.0f} MiB ({out['rss_before_mib']:,.0f} MiB with both "
        "windows loaded).",
        f"Sweep — {sweep}.",
        f"Data generation {generate_seconds:.1f} s (both windows, in this process); the "
        "Evidently venv "
        + (
            f"was installed during this run ({install_seconds:.0f} s)."
            if install_seconds is not None
            else "was already installed."
        ),
    ]


def main() -> None:
    load_before = os.getloadavg()
    evidently, install_seconds = evidently_python()
    print("drift: generating the windows", flush=True)
    started = time.perf_counter()
    reference = generate(ROWS, current=False)
    current = generate(ROWS, current=True)
    generate_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="mlops-drift-bench-") as name:
        directory = Path(name)
        write_windows(directory, reference, current)
        del current
        sizes = [measure_size(rows, directory, reference, evidently) for rows in SWEEP_ROWS]
    load_after = os.getloadavg()
    records = records_of(sizes)
    notes = notes_of(sizes, (load_before, load_after), install_seconds, generate_seconds)
    setup = {
        "rows": ROWS,
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
        "seed": SEED,
        "shifted": sorted(SHIFTED),
        "tiny_shift": TINY_SHIFT,
        "sweep_rows": list(SWEEP_ROWS),
        "repeats": REPEATS,
        "evidently": list(EVIDENTLY_REQUIREMENTS),
        "evidently_methods": sizes[-1].evidently.process.output["methods"],
    }
    stamp, machine = utc_now(), machine_info()
    for entry in records:
        entry.update(machine=machine, date=stamp, setup=setup, notes=notes)
    path = write_results("drift", records)
    print(f"drift: wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ours"]:
        print(json.dumps(ours_child(json.loads(sys.argv[2]))))
    else:
        main()
