"""Draw a measure's run chart or control chart with matplotlib (Agg, no pyplot), as PNG or SVG bytes.

Each call builds its own ``matplotlib.figure.Figure``, so renders in several threads share no state. The SVG is made
safe to inline in a page under a strict Content-Security-Policy: matplotlib's ``style`` attributes and ``<style>``
element become presentation attributes (which CSP does not govern), ids get a per-chart prefix so several charts can
share one page, and the output carries no date, so the same data always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import re
from datetime import date

import matplotlib

matplotlib.use("Agg", force=False)  # never a GUI backend on a server, whatever MPLBACKEND says
# Read by the SVG writer at save time, so they are set once here rather than per call (rc_context would mutate the
# same global from several threads): real <text> elements (searchable, accessible), and ids derived from a fixed salt
# instead of a random one so the output is reproducible.
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "careplan-measures"

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from careplan.measures import spc  # noqa: E402

FORMATS = ("png", "svg")
SERIES_COLOUR = "#1f3b5c"
CENTRE_COLOUR = "#2e7d32"
LIMIT_COLOUR = "#c62828"
MEDIAN_COLOUR = "#6d6d6d"
SUPPRESSED_COLOUR = "#e0e0e0"
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
STRATUM_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#999999")
STRATUM_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")
# One look per rule, so a legend entry names the rule and overlapping flags stay visible (open markers of different
# shapes and sizes). Run-chart rules and control-chart rules differ in colour.
SIGNAL_STYLES = {
    "run.shift": ("8", "#ff7f0e", 12),
    "run.trend": ("^", "#9467bd", 15),
    "run.astronomical": ("*", "#e377c2", 18),
    "p.outside-limits": ("o", "#d62728", 11),
    "xmr.outside-limits": ("o", "#d62728", 11),
    "p.shift": ("s", "#8c510a", 16),
    "xmr.shift": ("s", "#8c510a", 16),
    "p.trend": ("v", "#5e3c99", 17),
    "xmr.trend": ("v", "#5e3c99", 17),
    "p.two-of-three": ("D", "#01665e", 13),
    "xmr.two-of-three": ("D", "#01665e", 13),
    "p.hugging": ("h", "#17becf", 13),
    "mr.outside-limit": ("o", "#d62728", 10),
}
RUNS_COUNT_RULES = frozenset({"run.too-few-runs", "run.too-many-runs"})
_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_STYLE_ATTRIBUTE = re.compile(r' style="([^"]*)"')
_STYLE_ELEMENT = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL)
# The SVG 1.1 presentation attributes matplotlib writes as CSS properties.
PRESENTATION_ATTRIBUTES = frozenset({
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity", "stroke-linecap",
    "stroke-linejoin", "stroke-miterlimit", "stroke-dasharray", "stroke-dashoffset", "opacity", "font-family",
    "font-size", "font-style", "font-weight", "font-variant", "font-stretch", "text-anchor", "dominant-baseline",
    "alignment-baseline", "baseline-shift", "letter-spacing", "word-spacing", "clip-rule", "color", "display",
    "visibility", "mix-blend-mode",
})


def render(result, analysis: spc.Analysis | None = None, *, fmt: str = "png", stratified: bool = False,
           id_prefix: str | None = None) -> bytes:
    """Render a measure result and its SPC analysis as PNG or SVG bytes.

    analysis: from ``spc.analyse(result)`` (computed when None). stratified: draw each stratum of
    ``result.strata`` as its own series. id_prefix: prefix of the SVG's ids (default: from the measure id).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not isinstance(analysis, spc.Analysis):
        analysis = spc.analyse(result)
    figure = _draw(result, analysis, stratified=stratified)
    buffer = io.BytesIO()
    if fmt == "png":
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        return buffer.getvalue()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    measure_id = getattr(result.measure, "id", "chart")
    prefix = id_prefix if id_prefix is not None else f"{_ID_SAFE.sub('-', str(measure_id))}-"
    return csp_safe_svg(buffer.getvalue().decode("utf-8"), prefix=prefix,
                        label=getattr(result.measure, "title", str(measure_id))).encode("utf-8")


# -- drawing --------------------------------------------------------------------------------------------------------


def _draw(result, analysis: spc.Analysis, *, stratified: bool) -> Figure:
    points = list(result.points)
    n = len(points)
    proportion = analysis.control is not None and analysis.control.kind == "p" or (
        analysis.kind == "proportion" and analysis.control is None)
    control = analysis.control
    with_moving_ranges = control is not None and control.kind == "xmr"
    figure = Figure(figsize=(10, 7 if with_moving_ranges else 6), dpi=100, layout="constrained")
    if with_moving_ranges:
        grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
        axes = figure.add_subplot(grid[0])
        mr_axes = figure.add_subplot(grid[1], sharex=axes)
    else:
        axes, mr_axes = figure.add_subplot(), None
    x = list(range(n))
    values = [_nan(v) for v in analysis.values]
    measure = result.measure
    figure.suptitle(getattr(measure, "title", "Measure"), fontsize=13, fontweight="bold")
    axes.set_title(_subtitle(result, analysis, stratified), fontsize=9, color="#444444")

    suppressed = [i for i, p in enumerate(points) if getattr(p, "suppressed", False)]
    for i in suppressed:
        axes.axvspan(i - 0.5, i + 0.5, color=SUPPRESSED_COLOUR, zorder=0, lw=0)
    strata = dict(getattr(result, "strata", None) or {}) if stratified else {}
    stratum_suppressed = 0
    if strata:
        by_start = {p.period_start: i for i, p in enumerate(points)}
        for number, label in enumerate(strata):  # in the order the result gives (unknown last)
            series = [math.nan] * n
            for point in strata[label]:
                position = by_start.get(point.period_start)
                if position is None:
                    continue
                if getattr(point, "suppressed", False):
                    stratum_suppressed += 1
                    continue
                series[position] = _nan(_point_value(point, proportion))
            axes.plot(x, series, color=STRATUM_COLOURS[number % len(STRATUM_COLOURS)],
                      marker=STRATUM_MARKERS[number % len(STRATUM_MARKERS)], markersize=4, linewidth=1.2,
                      label=f"{label}", zorder=3, gid=f"stratum-{number + 1}")
    axes.plot(x, values, color=SERIES_COLOUR, marker="o", markersize=5, linewidth=2,
              label="All" if strata else _series_label(measure, proportion), zorder=4, gid="series")

    median = analysis.run.median
    if control is not None and control.centre is not None:
        axes.axhline(control.centre, color=CENTRE_COLOUR, linewidth=1.5,
                     label=_centre_label(control, proportion, measure), zorder=2, gid="centre-line")
        upper = [_nan(v) for v in control.upper]
        lower = [_nan(v) for v in control.lower]
        limit_label = "Control limits (p̄ ± 3σ, per period)" if control.kind == "p" else \
            "Process limits (mean ± 2.66 × mean moving range)"
        # Each period's limit spans its own slot: the p-chart's limits step with the denominator.
        axes.plot(*_stepped(upper), color=LIMIT_COLOUR, linestyle="--", linewidth=1.2, label=limit_label, zorder=2,
                  gid="upper-limit")
        axes.plot(*_stepped(lower), color=LIMIT_COLOUR, linestyle="--", linewidth=1.2, zorder=2, gid="lower-limit")
    if median is not None:
        axes.axhline(median, color=MEDIAN_COLOUR, linestyle=":", linewidth=1.3,
                     label=f"Median (run chart) {_format(median, proportion, measure)}", zorder=2, gid="median-line")

    _mark_signals(axes, [s for s in analysis.signals if s.chart != "mr"], x, values)
    if not any(not math.isnan(v) for v in values):
        axes.set_ylim(0, 1)  # nothing to scale to: a plain empty frame rather than matplotlib's ±0.05
        axes.text(0.5, 0.5, "No data in these periods", transform=axes.transAxes, ha="center", va="center",
                  fontsize=12, color="#666666")
    if proportion:
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        axes.set_ylabel("Percent")
    else:
        axes.set_ylabel(str(getattr(measure, "unit", "") or "Value").capitalize())
    axes.grid(axis="y", color="#dddddd", linewidth=0.6)
    axes.set_xlim(-0.5, max(n - 0.5, 0.5))

    if mr_axes is not None:
        ranges = [_nan(v) for v in control.moving_ranges]
        mr_axes.plot(x, ranges, color=SERIES_COLOUR, marker="o", markersize=3, linewidth=1.2,
                     label="Moving range", gid="moving-ranges")
        mr_axes.axhline(control.mean_moving_range, color=CENTRE_COLOUR, linewidth=1.2, gid="mean-moving-range")
        mr_axes.axhline(control.moving_range_upper, color=LIMIT_COLOUR, linestyle="--", linewidth=1.2,
                        gid="moving-range-limit")
        tallest = max([v for v in ranges if not math.isnan(v)] + [control.moving_range_upper or 0.0])
        mr_axes.set_ylim(0, tallest * 1.2 if tallest > 0 else 1)  # room for the signal rings at the top
        mr_axes.set_ylabel("Moving range", fontsize=8)
        mr_axes.grid(axis="y", color="#dddddd", linewidth=0.6)
        _mark_signals(mr_axes, [s for s in analysis.signals if s.chart == "mr"], x, ranges)
        axes.tick_params(labelbottom=False)
        bottom = mr_axes
    else:
        bottom = axes
    _period_axis(bottom, points)

    notes = []
    if suppressed:
        notes.append(f"Grey bands: {len(suppressed)} period(s) suppressed (fewer than 5 people), left out of the "
                     "centre line and limits.")
    if stratum_suppressed:
        notes.append(f"{stratum_suppressed} stratum cell(s) under 5 suppressed and shown as gaps.")
    if control is None and any(not math.isnan(v) for v in values):
        notes.append("Too few values for control limits.")
    if notes:
        # under the period label, laid out with the axes so it never overlaps them or the legend
        bottom.set_xlabel(f"{bottom.get_xlabel()}\n{' '.join(notes)}", fontsize=8, color="#333333")
    handles, labels = axes.get_legend_handles_labels()
    if mr_axes is not None:
        more_handles, more_labels = mr_axes.get_legend_handles_labels()
        handles, labels = handles + more_handles[1:], labels + more_labels[1:]  # the MR series itself needs no entry
    if handles:
        # below the chart, so long titles and rule names never collide with it
        figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return figure


def _mark_signals(axes, signals, x, values) -> None:
    """Overlay each rule's flagged points with its own marker; the legend names the rule."""
    by_rule: dict[str, list[int]] = {}
    described: dict[str, str] = {}
    for signal in signals:
        by_rule.setdefault(signal.rule, []).extend(signal.points)
        described[signal.rule] = signal.description
    for rule in sorted(by_rule, key=_rule_order):
        gid = f"signal-{rule.replace('.', '-')}"
        label = f"Signal: {spc.RULE_LABELS.get(rule, rule)}"
        if rule in RUNS_COUNT_RULES:
            # about the whole series: a legend entry with the counts, not a ring round every point
            axes.plot([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                      markeredgecolor="#7f7f7f", markeredgewidth=1.8, label=f"Signal: {described[rule]}", gid=gid)
            continue
        positions = sorted({p for p in by_rule[rule] if 0 <= p < len(values) and not math.isnan(values[p])})
        if not positions:
            continue
        marker, colour, size = SIGNAL_STYLES.get(rule, ("o", "#000000", 12))
        axes.plot([x[p] for p in positions], [values[p] for p in positions], linestyle="none", marker=marker,
                  markersize=size, markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.8,
                  label=label, zorder=5, gid=gid)


def _stepped(values: list[float]) -> tuple[list[float], list[float]]:
    """Return x and y that draw each period's value across its own slot, with gaps where a value is missing."""
    xs: list[float] = []
    ys: list[float] = []
    for i, value in enumerate(values):
        if math.isnan(value):
            xs.append(i)
            ys.append(math.nan)
            continue
        xs.extend((i - 0.5, i + 0.5))
        ys.extend((value, value))
    return xs, ys


def _rule_order(rule: str) -> tuple[int, str]:
    return (list(spc.RULE_LABELS).index(rule) if rule in spc.RULE_LABELS else len(spc.RULE_LABELS), rule)


def _period_axis(axes, points) -> None:
    if not points:
        return
    monthly = (points[0].period_end - points[0].period_start).days >= 27
    labels = [_period_label(p.period_start, monthly) for p in points]
    step = max(1, math.ceil(len(points) / 16))  # at most 16 labels, so they stay legible
    axes.set_xticks(range(0, len(points), step), labels[::step], rotation=45, ha="right", fontsize=8)
    axes.set_xlabel("Month" if monthly else "Week starting")


def _period_label(start: date, monthly: bool) -> str:
    return start.strftime("%b %Y") if monthly else start.isoformat()


def _subtitle(result, analysis: spc.Analysis, stratified: bool) -> str:
    control = analysis.control
    if control is None:
        chart = "Run chart"
    elif control.kind == "p":
        chart = "p-chart and run chart"
    else:
        chart = "XmR chart and run chart"
    if stratified and getattr(result, "stratifier", None) and getattr(result, "strata", None):
        chart += f" · by {result.stratifier}"
    count = sum(v is not None for v in analysis.values)
    found = len(analysis.signals)
    return f"{chart} · {count} of {len(result.points)} periods with data · " + (
        f"{found} signal{'s' if found != 1 else ''}" if found else "no signals: common-cause variation")


def _series_label(measure, proportion: bool) -> str:
    return "Proportion" if proportion else f"Value ({getattr(measure, 'unit', '') or 'units'})"


def _centre_label(control: spc.ControlChart, proportion: bool, measure) -> str:
    name = "p̄" if control.kind == "p" else "Mean"
    return f"Centre ({name} {_format(control.centre, proportion, measure)})"


def _format(value: float, proportion: bool, measure) -> str:
    if proportion:
        return f"{100 * value:.1f}%"
    unit = getattr(measure, "unit", "") or ""
    return f"{value:.3g} {unit}".strip()


def _point_value(point, proportion: bool) -> float | None:
    if proportion and point.numerator is not None and point.denominator:
        return point.numerator / point.denominator
    return point.value


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


# -- SVG for a strict Content-Security-Policy ------------------------------------------------------------------------


def csp_safe_svg(svg: str, *, prefix: str = "", label: str | None = None) -> str:
    """Return matplotlib SVG with presentation attributes instead of CSS, ids prefixed, and an accessible name."""
    root_attributes = ""
    style = _STYLE_ELEMENT.search(svg)
    if style:
        # matplotlib's only rule is "*{stroke-linejoin: round; stroke-linecap: butt}": inherited from the root instead
        universal = re.search(r"\*\s*\{([^}]*)\}", style.group(1))
        if universal:
            root_attributes = _attributes(universal.group(1))
        svg = svg[:style.start()] + svg[style.end():]
    svg = _STYLE_ATTRIBUTE.sub(lambda match: _attributes(match.group(1)), svg)
    if prefix:
        svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
        svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", svg)
    accessible = f' role="img" aria-label="{_escape(label)}"' if label else ""
    svg = re.sub(r"<svg\b", lambda m: f"<svg{root_attributes}{accessible}", svg, count=1)
    return svg


def _attributes(css: str) -> str:
    """Turn 'fill: #fff; stroke: none' into ' fill="#fff" stroke="none"', keeping SVG presentation properties only."""
    pieces = []
    for declaration in css.split(";"):
        name, _, value = declaration.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name in PRESENTATION_ATTRIBUTES and value:
            pieces.append(f' {name}="{value}"')  # already escaped: it comes from inside an attribute
    return "".join(pieces)


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;"))


def inline(svg: bytes | str) -> str:
    """Return an SVG document as a fragment to embed in HTML: no XML declaration, doctype or RDF metadata."""
    text = svg.decode("utf-8") if isinstance(svg, bytes) else svg
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>", "", text, flags=re.DOTALL)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return text.strip()
