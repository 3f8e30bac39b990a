"""Run-chart and statistical process control (SPC) analysis of a measure's series, with signals returned as data.

Rules and thresholds follow /work/shared/reference/domain.md section 6.1:

- Run chart (IHI; Perla, Provost & Murray 2011), median centre line: shift = 6 or more consecutive points on one
  side of the median (points on the median neither count nor break the run); trend = 5 or more consecutive points
  all going up or all going down (a repeated value neither counts nor breaks it); too few or too many runs for the
  number of useful observations (not on the median), from the Swed-Eisenhart runs distribution that the published
  table is built on (at most 2.5 % in each tail, n >= 10, see ``runs_limits``); astronomical point (a robust
  outlier test, see ASTRONOMICAL_Z). Anhøj's
  longest-run limit round(log2(n) + 3) is reported alongside, as information.
- p-chart (proportions): centre p̄ = Σ numerators / Σ denominators, limits p̄ ± 3·√(p̄(1−p̄)/nᵢ) per period clamped to
  [0, 1]; the IHI/NAHQ control-chart rules: 1 point outside the limits, 8 or more on one side of the centre line,
  6 or more going up or down, 2 of 3 consecutive points in the outer third (beyond 2 sigma) on the same side,
  15 or more consecutive points in the inner third (hugging).
- XmR (continuous), NHS Making Data Count as in NHSRplotthedots: mean ± 2.66 × mean moving range, "near the limits"
  at two thirds of that distance; 1 point outside the limits, 7 consecutive points on one side of the mean,
  7 consecutive points all increasing or all decreasing, 2 of 3 consecutive points near or beyond a limit on the
  same side; moving-range chart upper limit 3.267 × mean moving range.

Suppressed periods (small cells), periods without a value and periods with a zero denominator are left out of
every calculation but keep their place on the x axis: every index in a Signal is a position in ``result.points``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

# Run chart (IHI)
RUN_SHIFT = 6
RUN_TREND = 5
RUNS_TEST_MIN_POINTS = 10  # the published runs table starts at 10 useful observations
RUNS_TAIL = 0.025  # each tail of the two-sided 5 % test
# Astronomical point ("obviously different from the rest", which domain.md leaves to judgement): a modified z-score
# 0.6745·|x − median| / MAD above 3.5 (Iglewicz & Hoaglin 1993). Median and MAD ignore the outlier itself, and the
# ends of a steady trend are not flagged, as they would be by limits built from point-to-point variation.
ASTRONOMICAL_Z = 3.5
ASTRONOMICAL_MIN_POINTS = 8

# p-chart (IHI / NAHQ control-chart rules)
P_SIGMAS = 3
P_SHIFT = 8
P_TREND = 6
P_HUGGING = 15

# XmR (Making Data Count / NHSRplotthedots)
XMR_LIMIT = 2.66
XMR_NEAR = 2 * XMR_LIMIT / 3
XMR_SHIFT = 7
XMR_TREND = 7
MR_LIMIT = 3.267

UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Signal:
    """A special-cause signal: which rule fired, on which chart, at which positions of ``result.points``."""

    rule: str  # e.g. "run.shift", "p.outside-limits", "xmr.two-of-three", "mr.outside-limit"
    chart: str  # "run" | "p" | "xmr" | "mr"
    points: tuple[int, ...]
    description: str
    direction: str | None = None  # "up" | "down": which way the flagged points depart; None for runs counts
    assessment: str | None = None  # "improvement" | "concern" when the measure says which direction is better

    @property
    def label(self) -> str:
        """Return the short name of the rule, for a chart legend."""
        return RULE_LABELS.get(self.rule, self.rule)


RULE_LABELS = {
    "run.shift": f"Shift: {RUN_SHIFT}+ points on one side of the median",
    "run.trend": f"Trend: {RUN_TREND}+ points going up or down",
    "run.too-few-runs": "Too few runs",
    "run.too-many-runs": "Too many runs",
    "run.astronomical": "Astronomical point",
    "p.outside-limits": "Point outside the control limits",
    "p.shift": f"Shift: {P_SHIFT}+ points on one side of the centre line",
    "p.trend": f"Trend: {P_TREND}+ points going up or down",
    "p.two-of-three": "2 of 3 points in the outer third",
    "p.hugging": f"{P_HUGGING}+ points hugging the centre line",
    "xmr.outside-limits": "Point outside the process limits",
    "xmr.shift": f"Shift: {XMR_SHIFT}+ points on one side of the mean",
    "xmr.trend": f"Trend: {XMR_TREND}+ points increasing or decreasing",
    "xmr.two-of-three": "2 of 3 points near a process limit",
    "mr.outside-limit": "Moving range above its upper limit",
}


@dataclass(frozen=True)
class RunChart:
    """The run chart of a series: median, runs and their limits, and its signals."""

    values: tuple[float | None, ...]
    median: float | None
    useful_observations: int  # values not on the median
    runs: int
    runs_limits: tuple[int, int] | None  # (fewest, most) runs expected by chance; None below 10 useful observations
    longest_run: int
    longest_run_limit: int | None  # Anhøj: round(log2(n) + 3), for information
    signals: tuple[Signal, ...] = ()


@dataclass(frozen=True)
class ControlChart:
    """A p-chart or XmR chart: centre, per-point limits and signals (the XmR's moving-range chart included)."""

    kind: str  # "p" | "xmr"
    values: tuple[float | None, ...]
    centre: float | None
    upper: tuple[float | None, ...]
    lower: tuple[float | None, ...]
    sigma: tuple[float | None, ...]  # per-point sigma (p-chart), or the XmR's MR̄/1.128
    moving_ranges: tuple[float | None, ...] = ()
    mean_moving_range: float | None = None
    moving_range_upper: float | None = None
    signals: tuple[Signal, ...] = ()


@dataclass(frozen=True)
class Analysis:
    """Everything a chart or a reader needs: the run chart always, and the p-chart or the XmR chart."""

    kind: str  # the measure's kind: "proportion" | "continuous"
    values: tuple[float | None, ...]  # what is plotted, None where a point is left out
    run: RunChart
    control: ControlChart | None
    improvement: str | None = None  # "increase" | "decrease" from the measure definition
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def signals(self) -> tuple[Signal, ...]:
        """Return the signals of the run chart and of the control chart."""
        return self.run.signals + (self.control.signals if self.control else ())


# -- entry point --------------------------------------------------------------------------------------------------


def analyse(result) -> Analysis:
    """Analyse a measure result: p-chart for proportions with denominators, XmR otherwise, the run chart always."""
    points = list(result.points)
    kind = getattr(result, "kind", None) or getattr(result.measure, "kind", "continuous")
    improvement = getattr(result.measure, "improvement", None)
    notes: list[str] = []
    suppressed = [i for i, p in enumerate(points) if getattr(p, "suppressed", False)]
    if suppressed:
        notes.append(f"{len(suppressed)} suppressed period(s) left out of the calculations")
    if kind == "proportion" and any(_usable_denominator(p) for p in points):
        invalid = [p for p in points if not getattr(p, "suppressed", False) and p.numerator is not None
                   and p.denominator and not 0 <= p.numerator <= p.denominator]
        if invalid:
            notes.append(f"{len(invalid)} period(s) with a numerator outside 0..denominator left out")
        numerators = [p.numerator if _usable_denominator(p) else None for p in points]
        denominators = [p.denominator if _usable_denominator(p) else None for p in points]
        control = p_chart(numerators, denominators, improvement=improvement)
        values = control.values
    else:
        values = tuple(_value(p) for p in points)
        control = xmr_chart(values, improvement=improvement) if sum(v is not None for v in values) >= 2 else None
        if control is None:
            notes.append("fewer than 2 values: no control limits")
    run = run_chart(values, improvement=improvement)
    return Analysis(kind=kind, values=tuple(values), run=run, control=control, improvement=improvement,
                    notes=tuple(notes))


def _usable_denominator(point) -> bool:
    return (not getattr(point, "suppressed", False) and point.numerator is not None
            and point.denominator is not None and 0 <= point.numerator <= point.denominator
            and point.denominator > 0)


def _value(point) -> float | None:
    if getattr(point, "suppressed", False) or point.value is None:
        return None
    value = float(point.value)
    return value if math.isfinite(value) else None


def _present(values: Sequence[float | None]) -> list[tuple[int, float]]:
    """Return (position, value) of the values that take part in the calculations."""
    return [(i, v) for i, v in enumerate(values) if v is not None]


def _assess(direction: str | None, improvement: str | None) -> str | None:
    if direction is None or improvement not in ("increase", "decrease"):
        return None
    better = UP if improvement == "increase" else DOWN
    return "improvement" if direction == better else "concern"


def _signal(rule: str, chart: str, points, description: str, direction: str | None,
            improvement: str | None) -> Signal:
    return Signal(rule=rule, chart=chart, points=tuple(sorted(points)), description=description,
                  direction=direction, assessment=_assess(direction, improvement))


# -- building blocks shared by the charts ---------------------------------------------------------------------------


def side_runs(present: list[tuple[int, float]], centre: float, *, skip_on_centre: bool) -> list[tuple[int, list[int]]]:
    """Split a series into runs on one side of the centre: (side +1/-1, positions).

    skip_on_centre: a point on the centre neither counts nor breaks a run (IHI run charts); otherwise it ends the
    run and starts none (NHSRplotthedots, where its side is 0).
    """
    runs: list[tuple[int, list[int]]] = []
    current_side, current = 0, []
    for position, value in present:
        side = (value > centre) - (value < centre)
        if side == 0:
            if not skip_on_centre and current:
                runs.append((current_side, current))
                current_side, current = 0, []
            continue
        if side != current_side and current:
            runs.append((current_side, current))
            current = []
        current_side = side
        current.append(position)
    if current:
        runs.append((current_side, current))
    return runs


def monotone_runs(present: list[tuple[int, float]], *, skip_ties: bool) -> list[tuple[int, list[int]]]:
    """Split a series into maximal stretches all going up (+1) or all going down (-1): (direction, positions).

    skip_ties: equal neighbouring values count once and neither make nor break a stretch (IHI); otherwise a tie ends
    it (NHSRplotthedots). The positions of counted-once ties are all included, so flagged points are contiguous.
    """
    groups: list[tuple[float, list[int]]] = []  # (value, positions) of the points counted as one
    for position, value in present:
        if skip_ties and groups and groups[-1][0] == value:
            groups[-1][1].append(position)
        else:
            groups.append((value, [position]))
    stretches: list[tuple[int, list[int]]] = []
    index = 1
    while index < len(groups):
        direction = _step(groups, index)
        if direction == 0:
            index += 1
            continue
        last = index
        while last + 1 < len(groups) and _step(groups, last + 1) == direction:
            last += 1
        # steps index..last all go one way: groups index-1..last; the turning group also starts the next stretch
        stretches.append((direction, [p for _, members in groups[index - 1:last + 1] for p in members]))
        index = last + 1
    return stretches


def _step(groups: list[tuple[float, list[int]]], index: int) -> int:
    """Return the direction from group index-1 to group index: +1, -1 or 0."""
    before, after = groups[index - 1][0], groups[index][0]
    return (after > before) - (after < before)


def _counted(members: list[int], present: list[tuple[int, float]]) -> int:
    """Count the points of a stretch, a run of equal neighbouring values counting once."""
    lookup = dict(present)
    count, previous = 0, None
    for position in members:
        if previous is None or lookup[position] != previous:
            count += 1
        previous = lookup[position]
    return count


def _trend_signals(present, *, length: int, skip_ties: bool, rule: str, chart: str, noun: str,
                   improvement: str | None) -> list[Signal]:
    signals = []
    for direction, members in monotone_runs(present, skip_ties=skip_ties):
        count = _counted(members, present)
        if count >= length:
            way = UP if direction > 0 else DOWN
            words = "going up" if direction > 0 else "going down"
            signals.append(_signal(rule, chart, members, f"Trend: {count} consecutive {noun} all {words}",
                                   way, improvement))
    return signals


def _shift_signals(present, centre: float, *, length: int, skip_on_centre: bool, rule: str, chart: str,
                   line: str, improvement: str | None) -> list[Signal]:
    signals = []
    for side, members in side_runs(present, centre, skip_on_centre=skip_on_centre):
        if len(members) >= length:
            where = "above" if side > 0 else "below"
            signals.append(_signal(rule, chart, members,
                                   f"Shift: {len(members)} consecutive points {where} the {line}",
                                   UP if side > 0 else DOWN, improvement))
    return signals


# -- run chart ------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def runs_limits(useful: int) -> tuple[int, int] | None:
    """Return (fewest, most) runs expected by chance among `useful` observations not on the median.

    Fewer than the first or more than the second is a signal. Exact Swed-Eisenhart distribution of the number of runs
    with the observations split as evenly as possible above and below the median, each tail at most 2.5 %: this is
    how the published run-chart table (Perla, Provost & Murray 2011, after Swed & Eisenhart 1943) is built, e.g.
    10 -> (3, 9), 16 -> (5, 13), 24 -> (8, 18). None below 10 observations, where the table gives no limits.
    """
    if useful < RUNS_TEST_MIN_POINTS:
        return None
    above, below = useful // 2, useful - useful // 2
    probabilities = _runs_distribution(above, below)
    fewest = 2
    cumulative = 0.0
    for runs in range(2, useful + 1):
        cumulative += probabilities.get(runs, 0.0)
        if cumulative > RUNS_TAIL:
            fewest = runs
            break
    most = useful
    cumulative = 0.0
    for runs in range(useful, 1, -1):
        cumulative += probabilities.get(runs, 0.0)
        if cumulative > RUNS_TAIL:
            most = runs
            break
    return fewest, most


def _runs_distribution(m: int, n: int) -> dict[int, float]:
    """Return P(R = r) for the number of runs of m and n items in random order (Swed & Eisenhart 1943)."""
    total = math.comb(m + n, m)
    result: dict[int, float] = {}
    for runs in range(2, m + n + 1):
        k, odd = divmod(runs, 2)
        if odd:
            ways = math.comb(m - 1, k) * math.comb(n - 1, k - 1) + math.comb(m - 1, k - 1) * math.comb(n - 1, k)
        else:
            ways = 2 * math.comb(m - 1, k - 1) * math.comb(n - 1, k - 1)
        if ways:
            result[runs] = ways / total
    return result


def longest_run_limit(useful: int) -> int | None:
    """Return Anhøj's limit for the longest run: a run longer than round(log2(n) + 3) signals a shift."""
    if useful < 1:
        return None
    return int(math.floor(math.log2(useful) + 3 + 0.5))


def run_chart(values: Sequence[float | None], *, improvement: str | None = None) -> RunChart:
    """Analyse a series on a run chart (median centre line) with the four IHI rules."""
    present = _present(values)
    if not present:
        return RunChart(tuple(values), None, 0, 0, None, 0, None)
    median = statistics.median(v for _, v in present)
    runs = side_runs(present, median, skip_on_centre=True)
    useful = sum(len(members) for _, members in runs)
    limits = runs_limits(useful)
    longest = max((len(members) for _, members in runs), default=0)
    signals = _shift_signals(present, median, length=RUN_SHIFT, skip_on_centre=True, rule="run.shift", chart="run",
                             line="median", improvement=improvement)
    signals += _trend_signals(present, length=RUN_TREND, skip_ties=True, rule="run.trend", chart="run",
                              noun="points", improvement=improvement)
    if limits is not None:
        everything = tuple(position for _, members in runs for position in members)
        if len(runs) < limits[0]:
            signals.append(Signal("run.too-few-runs", "run", everything,
                                  f"Too few runs: {len(runs)} runs among {useful} points off the median "
                                  f"(fewer than {limits[0]} is unlikely by chance)"))
        elif len(runs) > limits[1]:
            signals.append(Signal("run.too-many-runs", "run", everything,
                                  f"Too many runs: {len(runs)} runs among {useful} points off the median "
                                  f"(more than {limits[1]} is unlikely by chance)"))
    signals += _astronomical(present, median, improvement)
    return RunChart(values=tuple(values), median=median, useful_observations=useful, runs=len(runs),
                    runs_limits=limits, longest_run=longest, longest_run_limit=longest_run_limit(useful),
                    signals=tuple(signals))


def _astronomical(present: list[tuple[int, float]], median: float, improvement: str | None) -> list[Signal]:
    if len(present) < ASTRONOMICAL_MIN_POINTS:
        return []
    deviation = statistics.median(abs(v - median) for _, v in present)
    if deviation <= 0:
        return []  # most values identical: no yardstick for "obviously different"
    reach = ASTRONOMICAL_Z * deviation / 0.6745
    signals = []
    for position, value in present:
        if abs(value - median) > reach:
            way = UP if value > median else DOWN
            signals.append(_signal("run.astronomical", "run", [position],
                                   f"Astronomical point: {_number(value)} is obviously different from the rest "
                                   f"(more than {_number(reach)} from the median {_number(median)})",
                                   way, improvement))
    return signals


# -- p-chart --------------------------------------------------------------------------------------------------------


def p_chart(numerators: Sequence[int | None], denominators: Sequence[int | None], *,
            improvement: str | None = None) -> ControlChart:
    """Analyse proportions on a p-chart: per-period 3-sigma limits around p̄ and the IHI/NAHQ control-chart rules."""
    if len(numerators) != len(denominators):
        raise ValueError("numerators and denominators differ in length")
    values: list[float | None] = []
    for num, den in zip(numerators, denominators):
        if num is None or den is None or den <= 0:
            values.append(None)
        else:
            if num < 0 or num > den:
                raise ValueError(f"numerator {num} is outside 0..{den}")
            values.append(num / den)
    total_num = sum(n for n, v in zip(numerators, values) if v is not None)
    total_den = sum(d for d, v in zip(denominators, values) if v is not None)
    if total_den == 0:
        empty = tuple(None for _ in values)
        return ControlChart("p", tuple(values), None, empty, empty, empty)
    centre = total_num / total_den
    sigma: list[float | None] = []
    upper: list[float | None] = []
    lower: list[float | None] = []
    for den, value in zip(denominators, values):
        if value is None:
            for column in (sigma, upper, lower):
                column.append(None)
            continue
        s = math.sqrt(centre * (1 - centre) / den)
        sigma.append(s)
        upper.append(min(1.0, centre + P_SIGMAS * s))
        lower.append(max(0.0, centre - P_SIGMAS * s))
    present = _present(values)
    signals: list[Signal] = []
    for position, value in present:
        if value > upper[position] or value < lower[position]:
            above = value > upper[position]
            signals.append(_signal("p.outside-limits", "p", [position],
                                   f"Point {_percent(value)} is {'above the upper' if above else 'below the lower'} "
                                   f"control limit ({_percent(upper[position] if above else lower[position])})",
                                   UP if above else DOWN, improvement))
    signals += _shift_signals(present, centre, length=P_SHIFT, skip_on_centre=True, rule="p.shift", chart="p",
                              line="centre line", improvement=improvement)
    signals += _trend_signals(present, length=P_TREND, skip_ties=True, rule="p.trend", chart="p", noun="points",
                              improvement=improvement)
    if 0 < centre < 1:  # at 0 % or 100 % every sigma is 0: the zones (and "hugging") mean nothing
        zscores = [(i, (v - centre) / sigma[i]) for i, v in present]
        signals += _two_of_three(zscores, 2.0, rule="p.two-of-three", chart="p", line="centre line",
                                 words="in the outer third (beyond 2 sigma)", improvement=improvement)
        signals += _hugging(zscores, improvement)
    return ControlChart("p", tuple(values), centre, tuple(upper), tuple(lower), tuple(sigma),
                        signals=tuple(signals))


def _two_of_three(distances: list[tuple[int, float]], near: float, *, rule: str, chart: str, line: str, words: str,
                  improvement: str | None) -> list[Signal]:
    """Flag 2 (or 3) of 3 consecutive points at `near` or further from the centre on the same side."""
    flagged: dict[int, set[int]] = {1: set(), -1: set()}
    for start in range(len(distances) - 2):
        window = distances[start:start + 3]
        for side in (1, -1):
            beyond = [position for position, d in window if side * d >= near]
            if len(beyond) >= 2:
                flagged[side].update(beyond)
    signals = []
    for side, positions in flagged.items():
        for group in _contiguous_groups(sorted(positions), [p for p, _ in distances]):
            where = "above" if side > 0 else "below"
            signals.append(_signal(rule, chart, group,
                                   f"2 of 3 consecutive points {where} the {line}, {words}: {len(group)} points "
                                   "flagged", UP if side > 0 else DOWN, improvement))
    return signals


def _contiguous_groups(flagged: list[int], order: list[int]) -> list[list[int]]:
    """Group flagged positions that lie within 3 consecutive points of each other, so each episode is one signal."""
    rank = {position: i for i, position in enumerate(order)}
    groups: list[list[int]] = []
    for position in flagged:
        if groups and rank[position] - rank[groups[-1][-1]] <= 2:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def _hugging(zscores: list[tuple[int, float]], improvement: str | None) -> list[Signal]:
    signals, current = [], []
    for position, z in zscores + [(-1, math.inf)]:
        if abs(z) < 1.0:
            current.append(position)
            continue
        if len(current) >= P_HUGGING:
            signals.append(_signal("p.hugging", "p", current,
                                   f"{len(current)} consecutive points hug the centre line (within 1 sigma)",
                                   None, improvement))
        current = []
    return signals


# -- XmR ------------------------------------------------------------------------------------------------------------


def xmr_chart(values: Sequence[float | None], *, improvement: str | None = None) -> ControlChart:
    """Analyse a continuous series on an XmR chart with the NHS Making Data Count rules."""
    values = tuple(None if v is None else float(v) for v in values)
    present = _present(values)
    if len(present) < 2:
        raise ValueError("an XmR chart needs at least 2 values")
    mean = statistics.fmean(v for _, v in present)
    # A moving range needs both neighbours on the x axis: a suppressed period leaves a gap in the ranges too.
    moving_ranges: list[float | None] = [None]
    for before, after in zip(values, values[1:]):
        moving_ranges.append(None if before is None or after is None else abs(after - before))
    ranges = [r for r in moving_ranges if r is not None]
    if not ranges:  # no two adjacent periods: fall back to ranges between consecutive values present
        ranges = [abs(b[1] - a[1]) for a, b in zip(present, present[1:])]
    mean_range = statistics.fmean(ranges)
    upl, lpl = mean + XMR_LIMIT * mean_range, mean - XMR_LIMIT * mean_range
    upper = tuple(None if v is None else upl for v in values)
    lower = tuple(None if v is None else lpl for v in values)
    sigma_value = mean_range / 1.128
    sigma = tuple(None if v is None else sigma_value for v in values)
    signals: list[Signal] = []
    for position, value in present:
        if value > upl or value < lpl:
            above = value > upl
            signals.append(_signal("xmr.outside-limits", "xmr", [position],
                                   f"Point {_number(value)} is {'above the upper' if above else 'below the lower'} "
                                   f"process limit ({_number(upl if above else lpl)})",
                                   UP if above else DOWN, improvement))
    signals += _shift_signals(present, mean, length=XMR_SHIFT, skip_on_centre=False, rule="xmr.shift", chart="xmr",
                              line="mean", improvement=improvement)
    signals += _trend_signals(present, length=XMR_TREND, skip_ties=False, rule="xmr.trend", chart="xmr",
                              noun="points", improvement=improvement)
    # Distance in units of the near-limit distance, so 1.0 is "near the limit" (2 sigma) on either side.
    reach = XMR_NEAR * mean_range
    distances = [(i, (v - mean) / reach if reach else 0.0) for i, v in present]
    signals += _two_of_three(distances, 1.0, rule="xmr.two-of-three", chart="xmr", line="mean",
                             words="near or beyond a process limit", improvement=improvement)
    mr_upper = MR_LIMIT * mean_range
    for position, moving_range in enumerate(moving_ranges):
        if moving_range is not None and moving_range > mr_upper:
            signals.append(Signal("mr.outside-limit", "mr", (position,),
                                  f"Moving range {_number(moving_range)} is above its upper limit "
                                  f"({_number(mr_upper)}): an unusually large jump"))
    return ControlChart("xmr", values, mean, upper, lower, sigma, moving_ranges=tuple(moving_ranges),
                        mean_moving_range=mean_range, moving_range_upper=mr_upper, signals=tuple(signals))


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"
