"""Charts: PNG that decodes, SVG with the title, signal markers, strata and gaps, safe to inline under a strict CSP."""

from __future__ import annotations

import io
import re
import threading
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest
from PIL import Image

from careplan.measures import charts, spc
from careplan.measures.compute import Point, Result
from careplan.measures.definitions import MeasureDefinition

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def measure(kind: str = "proportion", *, id: str = "ccp-within-30-days", title: str = "Plans within 30 days",
            improvement: str = "increase") -> MeasureDefinition:
    """Return a measure definition for chart fixtures."""
    return MeasureDefinition(id=id, title=title, description="d", population="p", numerator="n", denominator="d",
                             exclusions="e", kind=kind, unit="%" if kind == "proportion" else "days",
                             subject="patient", period_event="identification date", improvement=improvement)


def weeks(rows, start: date = date(2026, 9, 7)) -> list[Point]:
    """Return weekly points from (numerator, denominator, suppressed) rows; value = numerator / denominator."""
    points = []
    for i, (num, den, suppressed) in enumerate(rows):
        first = start + timedelta(weeks=i)
        value = None if suppressed or not den else num / den
        points.append(Point(first, first + timedelta(days=6), None if suppressed else num,
                            None if suppressed else den, value, suppressed))
    return points


def proportion_result(*, strata: dict | None = None) -> Result:
    """Return 14 weeks: 8 low, 1 suppressed, 4 high, then one far above the limits."""
    rows = [(5, 50, False)] * 4 + [(None, None, True)] + [(5, 50, False)] * 4 + [(15, 50, False)] * 4 \
        + [(30, 40, False)]
    points = weeks(rows)
    return Result(measure=measure(), kind="proportion", period="week", start=points[0].period_start,
                  end=points[-1].period_end, points=points, stratifier="language" if strata else None,
                  strata=strata or {})


def continuous_result() -> Result:
    """Return a median-days series whose last point is far above the process limit."""
    values = [5, 7, 6, 8, 6, 7, 5, 6, 7, 15]
    points = [Point(p.period_start, p.period_end, None, 4, float(v), False)
              for p, v in zip(weeks([(1, 1, False)] * len(values)), values)]
    return Result(measure=measure("continuous", id="days-to-ccp", title="Median days to a plan",
                                  improvement="decrease"),
                  kind="continuous", period="week", start=points[0].period_start, end=points[-1].period_end,
                  points=points)


def texts(svg: bytes) -> list[str]:
    """Return the text of every <text> element of an SVG."""
    root = ET.fromstring(svg)
    return ["".join(node.itertext()).strip() for node in root.iter(f"{SVG}text")]


def group(svg: bytes, gid: str) -> ET.Element:
    """Return the <g> of an SVG with an id."""
    root = ET.fromstring(svg)
    found = [node for node in root.iter(f"{SVG}g") if node.get("id") == gid]
    assert found, f"no group {gid!r} in the SVG"
    return found[0]


def test_png_decodes_at_the_figure_size_and_is_not_blank():
    data = charts.render(proportion_result(), spc.analyse(proportion_result()), fmt="png")
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.size == (1000, 600)  # 10 x 6 inches at 100 dpi
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 16)) > 50  # lines, markers and text, not one colour


def test_xmr_png_has_the_moving_range_panel_height():
    image = Image.open(io.BytesIO(charts.render(continuous_result(), fmt="png")))
    assert image.size == (1000, 700)


def test_svg_has_the_title_period_labels_lines_and_signals_named_in_the_legend():
    result = proportion_result()
    analysis = spc.analyse(result)
    svg = charts.render(result, analysis, fmt="svg")
    words = texts(svg)
    assert "Plans within 30 days" in words
    assert "2026-09-07" in words and "Week starting" in words
    assert "Centre (p̄ 20.3%)" in words  # (8·5 + 4·15 + 30) / (12·50 + 40) = 130 / 640 = 0.203
    assert any(w.startswith("Control limits") for w in words)
    assert any(w.startswith("Median (run chart)") for w in words)
    # 30/40 = 75 % is far above p̄ + 3σ: its marker sits in the group named after the rule, and the legend says so
    assert "Signal: Point outside the control limits" in words
    outside = group(svg, "ccp-within-30-days-signal-p-outside-limits")
    assert list(outside.iter(f"{SVG}use")) or list(outside.iter(f"{SVG}path"))
    for signal in analysis.signals:
        if signal.rule not in charts.RUNS_COUNT_RULES:
            group(svg, f"ccp-within-30-days-signal-{signal.rule.replace('.', '-')}")
    assert f"{sum(1 for _ in analysis.signals)} signals" in " ".join(words)


def test_p_chart_limits_step_with_the_denominator():
    svg = charts.render(proportion_result(), fmt="svg")
    path = group(svg, "ccp-within-30-days-upper-limit").find(f".//{SVG}path")
    heights = {round(float(y), 3) for y in re.findall(r"L?\s*[\d.]+ ([\d.]+)", path.get("d"))}
    assert len(heights) == 2  # denominators 50 and 40: two limit levels, drawn as steps


def test_suppressed_periods_are_a_gap_with_a_note():
    svg = charts.render(proportion_result(), fmt="svg")
    assert any("1 period(s) suppressed (fewer than 5 people)" in w for w in texts(svg))
    series = group(svg, "ccp-within-30-days-series").find(f".//{SVG}path").get("d")
    assert series.count("M ") == 2  # the line breaks at the suppressed week: two separate pieces


def test_stratified_svg_draws_each_stratum_with_its_label():
    result = proportion_result()
    strata = {"English": weeks([(3, 30, False)] * 14), "French": weeks([(2, 20, False)] * 8 + [(0, 0, True)] * 6)}
    stratified = Result(**{**result.__dict__, "stratifier": "language", "strata": strata})
    svg = charts.render(stratified, fmt="svg", stratified=True)
    words = texts(svg)
    assert {"English", "French", "All"} <= set(words)
    assert any("6 stratum cell(s) under 5 suppressed" in w for w in words)
    assert any("by language" in w for w in words)
    group(svg, "ccp-within-30-days-stratum-1"), group(svg, "ccp-within-30-days-stratum-2")
    assert "English" not in texts(charts.render(stratified, fmt="svg"))  # only when asked


def test_xmr_svg_has_the_process_limits_and_moving_range_signals():
    svg = charts.render(continuous_result(), fmt="svg")
    words = texts(svg)
    assert "Median days to a plan" in words and "Moving range" in words
    assert "Signal: Point outside the process limits" in words
    assert "Signal: Moving range above its upper limit" in words
    group(svg, "days-to-ccp-signal-xmr-outside-limits")
    group(svg, "days-to-ccp-signal-mr-outside-limit")
    group(svg, "days-to-ccp-moving-range-limit")


def test_svg_is_reproducible_and_safe_to_inline_under_a_strict_csp():
    first = charts.render(proportion_result(), fmt="svg")
    assert first == charts.render(proportion_result(), fmt="svg")
    assert charts.render(proportion_result(), fmt="png") == charts.render(proportion_result(), fmt="png")
    text = first.decode()
    assert "<style" not in text and " style=" not in text  # CSP style-src would block both
    assert "<dc:date>" not in text
    assert 'aria-label="Plans within 30 days"' in text
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert ids and all(i.startswith("ccp-within-30-days-") for i in ids)
    references = re.findall(r'href="#([^"]+)"|url\(#([^)]+)\)', text)
    assert all((a or b) in ids for a, b in references)
    fragment = charts.inline(first)
    assert fragment.startswith("<svg") and "<?xml" not in fragment and "DOCTYPE" not in fragment
    ET.fromstring(fragment)  # still well-formed


def test_renders_in_parallel_threads_match_a_serial_render():
    expected = {"png": charts.render(continuous_result(), fmt="png"),
                "svg": charts.render(proportion_result(), fmt="svg")}
    outcomes: list[bool] = []

    def work(fmt: str) -> None:
        result = continuous_result() if fmt == "png" else proportion_result()
        for _ in range(3):
            outcomes.append(charts.render(result, fmt=fmt) == expected[fmt])

    threads = [threading.Thread(target=work, args=(fmt,)) for fmt in ("png", "svg", "png", "svg")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [True] * 12


def test_a_result_without_values_renders_a_note():
    points = weeks([(None, None, True)] * 3)
    empty = Result(measure=measure(), kind="proportion", period="week", start=points[0].period_start,
                   end=points[-1].period_end, points=points)
    svg = charts.render(empty, fmt="svg")
    assert any("3 period(s) suppressed" in w for w in texts(svg))
    assert "No data in these periods" in texts(svg)
    one = [Point(p.period_start, p.period_end, None, None if p.suppressed else 6, None if p.suppressed else 12.0,
                 p.suppressed) for p in weeks([(None, None, True)] * 2 + [(6, 10, False)])]
    single = Result(measure=measure("continuous"), kind="continuous", period="week", start=one[0].period_start,
                    end=one[-1].period_end, points=one)  # an XmR chart needs two values
    assert any("Too few values for control limits" in w for w in texts(charts.render(single, fmt="svg")))


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        charts.render(proportion_result(), fmt="gif")
