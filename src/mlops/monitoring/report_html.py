"""A stored drift report as one self-contained HTML page.

``render_drift_report(document)`` takes the JSON the drift report routes return (the report's
identity and window around ``DriftReport.to_dict()``) and returns a page with no script and no
external resource: the service runs without internet, so the styles are inline and the
histograms inline SVG. Every string of the document is escaped: feature names and category
values are user data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlops.monitoring.categorical import OTHER

REFERENCE_COLOUR = "#4e79a7"
CURRENT_COLOUR = "#e15759"
TOP_CATEGORIES = 30
LABEL_CHARS = 28
NONE = "—"

WIDTH = 720
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 34  # margins around the plotting area
NUMERIC_HEIGHT = 220
OPEN_SLOT, SLOT_GAP = 44, 8  # the open-ended outer bins: fixed slots beside the finite ones
X_TICKS = 6
CATEGORY_LABELS, CATEGORY_SHARES, CATEGORY_ROW = 190, 120, 20

# (document key, column heading) of the feature table's figures
FIGURES = (
    ("psi", "PSI"),
    ("js", "JS"),
    ("ks", "KS"),
    ("wasserstein", "Wasserstein (norm.)"),
    ("chi_square", "χ²"),
    ("p_adjusted", "p (BH)"),
)

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:24px auto;max-width:1180px;
padding:0 16px}h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:16px;margin:0}dl{display:grid;grid-template-columns:max-content 1fr;
gap:2px 16px;margin:8px 0}dt{color:#666}dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.over{font-weight:700}.yes{color:#b3261e;font-weight:700}.no{color:#2e7d32}
.badge{font-size:11px;background:#eee;border-radius:3px;padding:1px 5px;margin-left:4px}
.reason{color:#555;font-size:12px}.note{color:#666;font-size:12px;margin:4px 0}
section{border-top:1px solid #ddd;padding:12px 0}svg{max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#444}
"""


def render_drift_report(document: Mapping[str, Any]) -> str:
    """The page for one drift report document (see the module docstring)."""
    features = sorted(
        document.get("features") or [],
        key=lambda f: (not f.get("drifted"), f.get("role") != "prediction"),
    )
    deployment = _text(document.get("deployment", NONE))
    window = f"{_moment(document.get('since'))} to {_moment(document.get('until'))}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Drift report: {deployment}, {window}</title>",
            f"<style>{STYLE}</style></head><body>",
            _header(document),
            _summary(document),
            _feature_table(features, (document.get("thresholds") or {}).get("alpha")),
            *(_feature_section(index, feature) for index, feature in enumerate(features)),
            "</body></html>",
        ]
    )


# --------------------------------------------------------------------------- text


def _text(value: object) -> str:
    return html.escape(str(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> str:
    if not _is_number(value):
        return NONE
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else "∞" if value > 0 else "-∞"
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 1_000:
        return f"{value:,.0f}"
    return f"{value:.2e}" if abs(value) < 0.001 else f"{value:.3g}"


def _percent(share: Any) -> str:
    return f"{100 * share:.3g} %" if _is_number(share) else NONE


def _moment(value: Any) -> str:
    if not value:
        return NONE
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return _text(value)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _yes_no(value: Any) -> str:
    if value is None:
        return '<span class="reason">not monitored</span>'
    return '<span class="yes">yes</span>' if value else '<span class="no">no</span>'


def _definitions(rows: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows) + "</dl>"


# --------------------------------------------------------------------------- page sections


def _header(document: Mapping[str, Any]) -> str:
    cut = " (the window held more requests than are read: the newest)"
    rows = [
        ("Window", f"{_moment(document.get('since'))} → {_moment(document.get('until'))}"),
        (
            "Rows",
            f"reference {_number(document.get('reference_rows'))} · "
            f"current {_number(document.get('current_rows'))}"
            + (cut if document.get("window_cut") else ""),
        ),
        ("Created", _moment(document.get("created_at"))),
        ("Trigger", _text(document.get("trigger") or NONE)),
        ("Report", _text(document.get("id") or NONE)),
        ("Reference profile", _text(document.get("reference_id") or NONE)),
    ]
    deployment = _text(document.get("deployment", NONE))
    return f"<header><h1>Drift report: {deployment}</h1>{_definitions(rows)}</header>"


def _summary(document: Mapping[str, Any]) -> str:
    thresholds = document.get("thresholds") or {}
    count = (
        f"{_number(document.get('drifted_count'))} of {_number(document.get('feature_count'))} "
        f"({_percent(document.get('drifted_share'))})"
    )
    drifted = ", ".join(_text(name) for name in document.get("drifted_features") or []) or NONE
    rule = f" (when ≥ {_percent(thresholds.get('dataset_share'))} of the features drift)"

    def limits(kind: str) -> str:
        listed = [
            f"{_text(dict(FIGURES).get(metric, metric))} ≥ {_number(limit)}"
            for metric, limit in (thresholds.get(kind) or {}).items()
            if limit is not None
        ]
        return " or ".join(listed) or "none"

    decision = (
        f"numeric: {limits('numeric')}; categorical: {limits('categorical')}; "
        f"and a BH-adjusted p-value &lt; {_number(thresholds.get('alpha'))}"
    )
    rows = [
        ("Dataset drift", _yes_no(document.get("dataset_drift")) + rule),
        ("Prediction drift", _yes_no(document.get("prediction_drift"))),
        ("Drifted features", f"{count}: {drifted}"),
        ("A feature drifts on", decision),
    ]
    return f"<h2>Summary</h2>{_definitions(rows)}"


def _figure_cell(key: str, value: Any, limit: Any) -> str:
    crossed = _is_number(value) and _is_number(limit)
    if crossed:
        crossed = value < limit if key == "p_adjusted" else value >= limit
    return f'<td class="n{" over" if crossed else ""}">{_number(value)}</td>'


def _feature_table(features: Sequence[Mapping[str, Any]], alpha: Any) -> str:
    heads = "".join(f"<th>{head}</th>" for _, head in FIGURES)
    rows = []
    for index, feature in enumerate(features):
        limits = feature.get("thresholds") or {}
        cells = "".join(
            _figure_cell(key, feature.get(key), alpha if key == "p_adjusted" else limits.get(key))
            for key, _ in FIGURES
        )
        mark = '<span class="yes">✓</span>' if feature.get("drifted") else "✗"
        rows.append(
            f'<tr><td><a href="#feature-{index}">{_text(feature.get("name", ""))}</a>'
            f"{_role_badge(feature)}</td><td>{_text(feature.get('kind', ''))}</td>"
            f'<td>{mark} <span class="reason">{_text(feature.get("reason", ""))}</span></td>'
            f"{cells}</tr>"
        )
    return (
        "<h2>Features</h2><table><thead><tr><th>Feature</th><th>Kind</th><th>Drifted</th>"
        f"{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Drifted first. Bold: the figure crossed its threshold.</p>'
    )


def _role_badge(feature: Mapping[str, Any]) -> str:
    return '<span class="badge">prediction</span>' if feature.get("role") == "prediction" else ""


def _feature_section(index: int, feature: Mapping[str, Any]) -> str:
    histogram = feature.get("histogram") or {}
    if feature.get("kind") == "categorical":
        chart, note = _categorical_chart(histogram), "Share of rows per category."
    else:
        chart = _numeric_chart(histogram)
        note = (
            "Share of rows per bin. The bins are the reference's quantiles, drawn at equal "
            "width; the end slots hold the values outside the reference's range."
        )
    drifted = feature.get("drifted")
    return (
        f'<section id="feature-{index}"><h3>{_text(feature.get("name", ""))}'
        f"{_role_badge(feature)} "
        f'<span class="{"yes" if drifted else "no"}">{"drifted" if drifted else "no drift"}'
        f'</span></h3><p class="reason">{_text(feature.get("reason", ""))}</p>'
        f'<p class="note">{_text(feature.get("kind", ""))}; values: reference '
        f"{_number(feature.get('reference_rows'))}, current "
        f"{_number(feature.get('current_rows'))}; missing: reference "
        f"{_percent(feature.get('reference_missing_share'))}, current "
        f"{_percent(feature.get('current_missing_share'))}</p>"
        f'{chart}<p class="note">{note}</p></section>'
    )


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class _Bar:
    """One bin or category: the two sides' shares of rows, and its label or bounds."""

    reference: float
    current: float
    label: str = ""
    low: float = -math.inf
    high: float = math.inf


def _shares(counts: Any) -> list[float]:
    values = [float(c) if _is_number(c) else 0.0 for c in counts or []]
    total = math.fsum(values)
    return [value / total if total > 0 else 0.0 for value in values]


def _edge(value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        return float(value)  # JSON may carry an infinity as "inf" or "Infinity"
    except (TypeError, ValueError):
        return math.nan


def _numeric_bins(histogram: Mapping[str, Any]) -> list[_Bar] | None:
    """The bins with their bounds, or None when edges and counts do not fit together. The
    engine stores one edge fewer than counts (the outer bins are open); one edge more than
    counts, the outer ones possibly infinite, is read as well."""
    reference, current = _shares(histogram.get("reference")), _shares(histogram.get("current"))
    edges = list(histogram.get("edges") or [])
    if not reference or len(reference) != len(current):
        return None
    if len(edges) == len(reference) - 1:
        edges = [-math.inf, *edges, math.inf]
    if len(edges) != len(reference) + 1:
        return None
    bounds = [_edge(edges[0], -math.inf), *(_edge(e, math.nan) for e in edges[1:-1])]
    bounds.append(_edge(edges[-1], math.inf))
    if any(math.isnan(bound) for bound in bounds):
        return None
    pairs = zip(reference, current, bounds[:-1], bounds[1:], strict=True)
    return [_Bar(r, c, low=low, high=high) for r, c, low, high in pairs]


def _unavailable(reason: str) -> str:
    return f'<p class="note">No histogram: {reason}.</p>'


def _svg(height: float, label: str, body: list[str]) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" height="{height:.0f}" '
        f'role="img" aria-label="{label}">{"".join(body)}</svg>'
    )


def _legend() -> list[str]:
    return [
        f'<rect x="{LEFT + offset}" y="6" width="12" height="12" fill="{colour}"/>'
        f'<text x="{LEFT + offset + 16}" y="16">{name}</text>'
        for offset, name, colour in (
            (0, "reference", REFERENCE_COLOUR),
            (110, "current", CURRENT_COLOUR),
        )
    ]


def _label(x: float, y: float, text: str, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{_text(text)}</text>'


def _numeric_chart(histogram: Mapping[str, Any]) -> str:
    bins = _numeric_bins(histogram)
    if bins is None:
        return _unavailable("the stored bins do not match their counts")
    peak = max(max(b.reference, b.current) for b in bins)
    if peak == 0:
        return _unavailable("no values on either side")
    lead = bins[:1] if math.isinf(bins[0].low) else []
    tail = bins[-1:] if math.isinf(bins[-1].high) and len(bins) > len(lead) else []
    middle = bins[len(lead) : len(bins) - len(tail)]
    bottom, right = NUMERIC_HEIGHT - BOTTOM, WIDTH - RIGHT

    def y(share: float) -> float:
        return bottom - (bottom - TOP) * share / peak

    body = [f'<line x1="{LEFT}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#888"/>']
    for fraction in (0.0, 0.5, 1.0):
        level = y(peak * fraction)
        body.append(
            f'<line x1="{LEFT}" x2="{right}" y1="{level:.1f}" y2="{level:.1f}" stroke="#e4e4e4"/>'
            + _label(LEFT - 4, level + 4, _percent(peak * fraction), "end")
        )
    for bar, x in [(bar, LEFT) for bar in lead] + [(bar, right - OPEN_SLOT) for bar in tail]:
        body += _open_slot(bar, x, y, bottom)
    if middle:
        start = LEFT + (OPEN_SLOT + SLOT_GAP if lead else 0)
        width = (right - (OPEN_SLOT + SLOT_GAP if tail else 0) - start) / len(middle)
        for side, colour, fill in (
            ("reference", REFERENCE_COLOUR, f'fill="{REFERENCE_COLOUR}" fill-opacity="0.3"'),
            ("current", CURRENT_COLOUR, 'fill="none"'),
        ):
            steps = "".join(
                f"V{y(getattr(bar, side)):.1f}H{start + (i + 1) * width:.1f}"
                for i, bar in enumerate(middle)
            )
            body.append(
                f'<path d="M{start:.1f},{bottom}{steps}V{bottom}Z" {fill} stroke="{colour}" '
                'stroke-width="1.5"/>'
            )
        body += _x_ticks(middle, start, width, bottom, (bool(lead), bool(tail)))
    return _svg(NUMERIC_HEIGHT, "reference and current shares per bin", body + _legend())


def _open_slot(bar: _Bar, x: float, y: Callable[[float], float], bottom: float) -> list[str]:
    half = OPEN_SLOT / 2
    if math.isinf(bar.low) and math.isinf(bar.high):
        label = "all values"
    else:
        label = f"< {_number(bar.high)}" if math.isinf(bar.low) else f"≥ {_number(bar.low)}"
    parts = [
        f'<rect x="{x}" y="{TOP}" width="{OPEN_SLOT}" height="{bottom - TOP}" fill="#f4f4f4"/>'
    ]
    for offset, share, colour in (
        (2, bar.reference, REFERENCE_COLOUR),
        (half, bar.current, CURRENT_COLOUR),
    ):
        parts.append(
            f'<rect x="{x + offset:.1f}" y="{y(share):.1f}" width="{half - 2:.1f}" '
            f'height="{bottom - y(share):.1f}" fill="{colour}">'
            f"<title>{_percent(share)}</title></rect>"
        )
    return [*parts, _label(x + half, bottom + 14, label)]


def _x_ticks(
    middle: Sequence[_Bar], start: float, width: float, bottom: float, open_ends: tuple[bool, bool]
) -> list[str]:
    boundaries = [middle[0].low, *(bar.high for bar in middle)]
    last = len(boundaries) - 1
    count = min(X_TICKS, len(boundaries))
    picks = sorted({round(j * last / max(count - 1, 1)) for j in range(count)})
    parts = []
    for index in picks:
        # an open slot's label already names the edge it shares with the finite bins
        if (index == 0 and open_ends[0]) or (index == last and open_ends[1]):
            continue
        x = start + index * width
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#888"/>'
            + _label(x, bottom + 14, _number(boundaries[index]))
        )
    return parts


def _category_bars(histogram: Mapping[str, Any]) -> list[_Bar] | None:
    """The categories with the larger share on either side first, up to ``TOP_CATEGORIES``;
    the rest folded, with the engine's own other bucket, into one *other* bar."""
    labels = list(histogram.get("categories") or [])
    reference, current = _shares(histogram.get("reference")), _shares(histogram.get("current"))
    if not labels or not len(labels) == len(reference) == len(current):
        return None
    bars = [_Bar(r, c, str(label)) for label, r, c in zip(labels, reference, current, strict=True)]
    named = sorted(
        (bar for bar in bars if bar.label != OTHER),
        key=lambda bar: max(bar.reference, bar.current),
        reverse=True,
    )
    folded = named[TOP_CATEGORIES:]
    rest = folded + [bar for bar in bars if bar.label == OTHER]
    other = _Bar(
        math.fsum(bar.reference for bar in rest),
        math.fsum(bar.current for bar in rest),
        f"other (+{len(folded)} categories)" if folded else "other (rare or unseen)",
    )
    return named[:TOP_CATEGORIES] + ([other] if folded or other.reference or other.current else [])


def _categorical_chart(histogram: Mapping[str, Any]) -> str:
    bars = _category_bars(histogram)
    if bars is None:
        return _unavailable("the stored categories do not match their counts")
    peak = max((max(bar.reference, bar.current) for bar in bars), default=0.0)
    if peak == 0:
        return _unavailable("no values on either side")
    left, right = CATEGORY_LABELS, WIDTH - CATEGORY_SHARES
    bottom = TOP + len(bars) * CATEGORY_ROW
    body = []
    for i, bar in enumerate(bars):
        row = TOP + i * CATEGORY_ROW
        short = bar.label if len(bar.label) <= LABEL_CHARS else bar.label[: LABEL_CHARS - 1] + "…"
        body.append(
            f'<text x="{left - 6}" y="{row + 14}" text-anchor="end"><title>{_text(bar.label)}'
            f"</title>{_text(short)}</text>"
        )
        for offset, share, colour in (
            (3, bar.reference, REFERENCE_COLOUR),
            (10, bar.current, CURRENT_COLOUR),
        ):
            body.append(
                f'<rect x="{left}" y="{row + offset}" width="{(right - left) * share / peak:.1f}" '
                f'height="7" fill="{colour}"/>'
            )
        shares = f"{_percent(bar.reference)} → {_percent(bar.current)}"
        body.append(_label(right + 6, row + 14, shares, "start"))
    body.append(
        f'<path d="M{left},{TOP}V{bottom}H{right}" fill="none" stroke="#888"/>'
        + "".join(
            _label(left + (right - left) * fraction, bottom + 14, _percent(peak * fraction))
            for fraction in (0.0, 0.5, 1.0)
        )
    )
    return _svg(bottom + BOTTOM, "reference and current shares per category", body + _legend())
