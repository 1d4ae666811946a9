"""``labelled://`` URIs: written and read back, refused with a reason, and the holdout split."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlops.monitoring.labelled import (
    LabelledQuery,
    in_holdout,
    labelled_uri,
    parse_labelled_uri,
)
from mlops.steps.datasets import SCHEMES, peek_dataset
from mlops.steps.framework import StepError

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = datetime(2026, 2, 1, 12, 30, 15, 250_000, tzinfo=UTC)
GOOD = "since=2026-01-01T00:00:00%2B00:00&until=2026-02-01T00:00:00%2B00:00"


@pytest.mark.parametrize(
    "query",
    [
        LabelledQuery("churn", SINCE, UNTIL),
        LabelledQuery("churn-v2", SINCE, UNTIL, part="train", holdout_share=0.25, target="y"),
        LabelledQuery("eta", SINCE, UNTIL, part="holdout", holdout_share=0.1, target="a b&c=d+é"),
    ],
)
def test_a_uri_reads_back_as_the_query_it_was_written_from(query: LabelledQuery) -> None:
    uri = labelled_uri(query)
    assert uri.startswith(f"labelled://{query.deployment}?since=")
    assert parse_labelled_uri(uri) == query


def test_times_are_percent_encoded_and_read_as_utc() -> None:
    uri = labelled_uri(LabelledQuery("churn", SINCE, UNTIL, part="train"))
    assert uri == (
        "labelled://churn?since=2026-01-01T00%3A00%3A00%2B00%3A00"
        "&until=2026-02-01T12%3A30%3A15.250000%2B00%3A00&part=train"
        "&holdout_share=0.3&target=target"
    )
    paris = timezone(timedelta(hours=1))
    naive = parse_labelled_uri("labelled://churn?since=2026-01-01T00:00:00&until=2026-01-02")
    assert (naive.since, naive.until) == (SINCE, SINCE + timedelta(days=1))
    assert naive.since.tzinfo is UTC and naive.part == "all" and naive.holdout_share == 0.3
    assert naive.target == "target"
    shifted = parse_labelled_uri(
        "labelled://churn?since=2026-01-01T01:00:00+01:00&until=2026-01-02T00:00:00Z"
    )  # an unencoded "+" (read as a space) is still understood
    assert shifted.since == datetime(2026, 1, 1, 1, tzinfo=paris) == SINCE
    assert shifted.since.tzinfo is UTC
    query = LabelledQuery("churn", datetime(2026, 1, 1), datetime(2026, 1, 1, 2, tzinfo=paris))
    assert query.since == SINCE and query.until == SINCE + timedelta(hours=1)
    assert query.since.tzinfo is UTC and query.until.tzinfo is UTC  # naive is UTC, aware made UTC
    with pytest.raises(ValueError, match="must be before"):
        LabelledQuery("churn", SINCE, datetime(2026, 1, 1, 1, tzinfo=paris))


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (f"features://churn?{GOOD}", "expected labelled://DEPLOYMENT"),
        (f"labelled://?{GOOD}", "names no deployment"),
        ("labelled://churn?until=2026-02-01", "gives no since="),
        ("labelled://churn?since=2026-01-01", "gives no until="),
        ("labelled://churn?since=&until=2026-02-01", "gives no since="),
        ("labelled://churn", "gives no since="),
        ("labelled://churn?since=yesterday&until=2026-02-01", "since must be an ISO 8601 time"),
        ("labelled://churn?since=2026-01-01&until=2026-13-01", "until must be an ISO 8601 time"),
        ("labelled://churn?since=2026-02-01&until=2026-01-01", r"since \(2026-02-01.*before until"),
        ("labelled://churn?since=2026-01-01&until=2026-01-01", "must be before until"),
        (f"labelled://churn?{GOOD}&part=test", "part must be one of train, holdout, all"),
        (f"labelled://churn?{GOOD}&holdout_share=0", r"holdout_share must be in \(0, 1\)"),
        (f"labelled://churn?{GOOD}&holdout_share=1", r"holdout_share must be in \(0, 1\)"),
        (f"labelled://churn?{GOOD}&holdout_share=-0.2", r"holdout_share must be in \(0, 1\)"),
        (f"labelled://churn?{GOOD}&holdout_share=nan", r"holdout_share must be in \(0, 1\)"),
        (f"labelled://churn?{GOOD}&holdout_share=a+third", "holdout_share must be a number"),
        (f"labelled://churn?{GOOD}&target=", "target .* must not be empty"),
        (f"labelled://churn?{GOOD}&holdout=0.2", "unknown parameter.*holdout; known: since"),
        (f"labelled://churn?{GOOD}&part=train&part=all", "more than once: part"),
    ],
)
def test_a_bad_uri_is_refused_naming_the_problem(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_labelled_uri(uri)


def test_the_step_library_knows_the_scheme_and_refuses_a_bad_uri_before_a_job_is_queued() -> None:
    assert "labelled://" in SCHEMES
    assert peek_dataset(f"labelled://churn?{GOOD}&part=train") == ([], None)  # no database read
    with pytest.raises(StepError, match="part must be one of"):
        peek_dataset(f"labelled://churn?{GOOD}&part=everything")


def test_in_holdout_is_deterministic_and_stable_across_processes() -> None:
    pairs = [(p, r) for p in (1, 2, 3, 10_000, 2**40) for r in range(8)]
    here = [in_holdout(p, r, 0.3) for p, r in pairs]
    assert here == [in_holdout(p, r, 0.3) for p, r in pairs]
    code = (
        "from mlops.monitoring.labelled import in_holdout;"
        f"print([in_holdout(p, r, 0.3) for p, r in {pairs!r}])"
    )
    other = subprocess.run(  # another interpreter, another hash seed
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == repr(here)
    assert any(here) and not all(here)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.3, 0.5, 0.9])
def test_holdout_takes_about_its_share_and_train_is_the_rest(share: float) -> None:
    pairs = [(p, r) for p in range(1, 2_001) for r in range(5)]  # 10,000 (id, row) pairs
    held = {pair for pair in pairs if in_holdout(*pair, share)}
    train = {pair for pair in pairs if not in_holdout(*pair, share)}
    assert held.isdisjoint(train) and held | train == set(pairs)
    assert abs(len(held) / len(pairs) - share) < 0.02
    # one row per request too (sequential ids are the common case)
    singles = [p for p in range(1, 10_001) if in_holdout(p, 0, share)]
    assert abs(len(singles) / 10_000 - share) < 0.02


def test_a_row_held_out_at_one_share_stays_held_out_at_a_larger_one() -> None:
    pairs = [(p, r) for p in range(1, 1_001) for r in range(3)]
    small = {pair for pair in pairs if in_holdout(*pair, 0.2)}
    large = {pair for pair in pairs if in_holdout(*pair, 0.4)}
    assert small < large
