"""The drift report page (mlops.monitoring.report_html) on documents made by the real engine:
every feature named, drifted ones marked, one histogram each, user data escaped, open outer
bins labelled, long category lists folded, nothing external, and well-formed markup."""

from __future__ import annotations

import copy
import math
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.monitoring import ReferenceProfile, compare
from mlops.monitoring.report_html import TOP_CATEGORIES, render_drift_report

HOSTILE_NAME = "<script>alert('name')</script>"
HOSTILE_VALUE = "<script>alert('value')</script>"
ROWS = 4_000
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}


def api_document(report: dict[str, Any]) -> dict[str, Any]:
    """What the drift report routes return: the report's identity and window around it."""
    return {
        "id": "6f1c2a9e-0d1b-4c55-9a57-6c1b7f2e9d10",
        "deployment": "bc",
        "reference_id": "0b7e3e8a-73c4-4d7b-bb1e-0c3b6a4f1a22",
        "since": "2026-11-28T00:00:00Z",
        "until": "2026-11-28T01:00:00Z",
        "created_at": "2026-11-28T01:00:02.5Z",
        "trigger": "on_demand",
        **report,
    }


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    r = np.random.default_rng(7)
    many = [f"city-{i}" for i in range(45)]  # more than the page shows one by one

    def frame(shift: float, score_power: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "shifted": r.normal(shift, 1, ROWS),
                "stable": r.normal(0, 1, ROWS),
                HOSTILE_NAME: r.exponential(1, ROWS),
                "colour": r.choice(["red", "green", HOSTILE_VALUE], ROWS),
                "city": r.choice(many, ROWS),
                "score": r.random(ROWS) ** score_power,
            }
        )

    return frame(0.0, 1.0), frame(1.0, 2.0)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    reference, current = frames()
    profile = ReferenceProfile.build(reference, prediction="score")
    return api_document(compare(profile, current).to_dict())


class Page(HTMLParser):
    """Checks that tags balance and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.headings: list[str] = []  # one per feature section, in page order
        self.rows: list[list[str]] = []  # the feature table's body
        self.svg_texts: list[list[str]] = []  # per chart, its text and title strings
        self.svg_attributes: list[str] = []
        self.open_texts: list[int] = []  # where each open <text> or <title> is collected

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "h3":
            self.headings.append("")
        elif tag == "tr" and "tbody" in self.stack:
            self.rows.append([])
        elif tag == "td":
            self.rows[-1].append("")
        elif tag == "svg":
            self.svg_texts.append([])
        if "svg" in self.stack:
            self.svg_attributes += [value or "" for _, value in attrs]
            if tag in {"text", "title"}:
                self.open_texts.append(len(self.svg_texts[-1]))
                self.svg_texts[-1].append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "svg" in self.stack:
            self.svg_attributes += [value or "" for _, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if "svg" in self.stack and tag in {"text", "title"}:
            self.open_texts.pop()

    def handle_data(self, data: str) -> None:
        if "h3" in self.stack:
            self.headings[-1] += data
        elif "td" in self.stack:
            self.rows[-1][-1] += data
        if "svg" in self.stack and self.stack[-1] in {"text", "title"}:
            self.svg_texts[-1][self.open_texts[-1]] += data


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def test_every_feature_is_named_with_its_verdict_and_drifted_ones_come_first(
    document: dict[str, Any],
) -> None:
    drifted = {f["name"] for f in document["features"] if f["drifted"]}
    assert drifted == {"shifted", "score"}  # the data exercise both verdicts
    page = parse(render_drift_report(document))

    names = [f["name"] for f in document["features"]]
    by_name = {row[0].removesuffix("prediction"): row for row in page.rows}
    assert sorted(by_name) == sorted(names)
    for name in names:
        assert by_name[name][2].startswith("✓" if name in drifted else "✗")
    assert by_name["score"][0] == "scoreprediction"  # the prediction row is marked

    assert len(page.headings) == len(names)
    first = page.headings[: len(drifted)]
    assert all(heading.endswith(" drifted") for heading in first)
    assert all(heading.endswith(" no drift") for heading in page.headings[len(drifted) :])


def test_header_summary_and_figures(document: dict[str, Any]) -> None:
    page = render_drift_report(document)
    for expected in (
        "Drift report: bc",
        "2026-11-28 00:00:00 UTC → 2026-11-28 01:00:00 UTC",
        "on_demand",
        document["id"],
        f"reference {ROWS:,}",
    ):
        assert expected in page
    shifted = next(f for f in document["features"] if f["name"] == "shifted")
    row = next(r for r in parse(page).rows if r[0] == "shifted")
    assert row[3] == f"{shifted['psi']:.3g}"  # PSI
    assert row[7] == "—"  # chi-square does not apply to a numeric feature


def test_one_histogram_per_feature(document: dict[str, Any]) -> None:
    page = render_drift_report(document)
    assert page.count("<svg") == len(document["features"])
    legends = [texts[-2:] for texts in parse(page).svg_texts]
    assert all(legend == ["reference", "current"] for legend in legends)


def test_user_data_is_escaped(document: dict[str, Any]) -> None:
    page = render_drift_report(document)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;value&#x27;)&lt;/script&gt;" in page
    parsed = parse(page)
    assert any(row[0] == HOSTILE_NAME for row in parsed.rows)
    assert any(HOSTILE_VALUE in texts for texts in parsed.svg_texts)


def test_no_external_resources(document: dict[str, Any]) -> None:
    page = render_drift_report(document).lower()
    for reference in ("http://", "https://", "<script", "<link", " src=", "url(", "@import"):
        assert reference not in page


@pytest.mark.parametrize(
    ("low", "high"),
    [(-math.inf, math.inf), ("-Infinity", "Infinity"), (None, None)],
    ids=["floats", "json-strings", "nulls"],
)
def test_open_outer_bins_are_labelled_not_drawn_infinitely_wide(
    document: dict[str, Any], low: Any, high: Any
) -> None:
    changed = copy.deepcopy(document)
    feature = next(f for f in changed["features"] if f["name"] == "stable")
    # one edge more than counts, the outer ones infinite
    feature["histogram"] = {
        "edges": [low, 0.0, 1.0, 2.0, high],
        "reference": [0, 60, 40, 0],
        "current": [10, 40, 30, 20],
    }
    page = parse(render_drift_report(changed))
    texts = [text for chart in page.svg_texts for text in chart]
    assert "< 0" in texts and "≥ 2" in texts
    numbers = [value for value in page.svg_attributes if re.fullmatch(r"[-\d.]+", value)]
    assert numbers and all(math.isfinite(float(value)) for value in numbers)
    assert not any(re.search(r"inf|nan", value, re.I) for value in page.svg_attributes)


def test_the_engines_open_outer_bins_are_labelled_too(document: dict[str, Any]) -> None:
    shifted = next(f for f in document["features"] if f["name"] == "shifted")
    edges = shifted["histogram"]["edges"]
    assert len(edges) == len(shifted["histogram"]["reference"]) - 1
    chart = parse(render_drift_report(document)).svg_texts[0]  # shifted: drifted, listed first
    assert any(text.startswith("< ") for text in chart)
    assert any(text.startswith("≥ ") for text in chart)


def test_long_category_lists_are_folded_into_other(document: dict[str, Any]) -> None:
    city = next(f for f in document["features"] if f["name"] == "city")
    assert len(city["histogram"]["categories"]) == 46  # 45 cities and the engine's other
    page = parse(render_drift_report(document))
    chart = next(texts for texts in page.svg_texts if any("city-" in t for t in texts))
    labels = [text for text in chart if text.startswith("city-")]
    # each kept label appears twice: its <title> and its (possibly shortened) text
    assert len(set(labels)) == TOP_CATEGORIES
    assert "other (+15 categories)" in chart


def test_a_feature_without_current_values_and_a_malformed_histogram(
    document: dict[str, Any],
) -> None:
    changed = copy.deepcopy(document)
    reference, current = frames()
    current["stable"] = np.nan
    profile = ReferenceProfile.build(reference, prediction="score")
    changed["features"] = compare(profile, current).to_dict()["features"]
    broken = next(f for f in changed["features"] if f["name"] == "colour")
    broken["histogram"]["categories"] = ["only one label"]
    page = render_drift_report(changed)
    row = next(r for r in parse(page).rows if r[0] == "stable")
    assert row[2] == "✗ no values in the current window"
    assert row[3:] == ["—"] * 6
    assert "No histogram: the stored categories do not match their counts." in page


def test_fifty_features_of_a_hundred_bins_make_a_small_page() -> None:
    r = np.random.default_rng(3)
    reference = pd.DataFrame({f"f{i:02d}": r.normal(0, 1, 3_000) for i in range(50)})
    current = pd.DataFrame({f"f{i:02d}": r.normal(i / 50, 1, 3_000) for i in range(50)})
    report = compare(ReferenceProfile.build(reference), current).to_dict()
    assert min(len(f["histogram"]["reference"]) for f in report["features"]) > 90
    page = render_drift_report(api_document(report))
    assert page.count("<svg") == 50
    assert len(page.encode()) < 1_000_000
    parse(page)
