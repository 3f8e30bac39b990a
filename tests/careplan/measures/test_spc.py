"""Run-chart, p-chart and XmR rules against hand-computed series that must signal and series that must not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest

from careplan.measures import spc


def rules(signals) -> set[str]:
    """Return the rule ids of some signals."""
    return {s.rule for s in signals}


def only(signals, rule: str) -> list[spc.Signal]:
    """Return the signals of one rule."""
    return [s for s in signals if s.rule == rule]


# -- run chart: shift (6 or more on one side of the median; points on the median neither count nor break) ----------


def test_shift_of_six_signals_and_a_point_on_the_median_neither_counts_nor_breaks_it():
    # sorted: 1 1 1 2 2 5 5 8 8 8 9 9 9 -> median 5 (7th of 13); above: 4 5 | 7 8 9 10 with 6 (=5) on the median
    series = [1, 2, 1, 5, 8, 9, 5, 8, 9, 8, 9, 2, 1]
    chart = spc.run_chart(series)
    assert chart.median == 5
    [shift] = only(chart.signals, "run.shift")
    assert shift.points == (4, 5, 7, 8, 9, 10)
    assert shift.direction == "up"
    assert "6 consecutive points above the median" in shift.description


def test_five_on_one_side_is_no_shift():
    # sorted: 1 1 1 2 2 2 5 5 8 8 8 9 9 -> median 5; the longest run above is 4 5 7 8 9: five points
    chart = spc.run_chart([1, 2, 1, 5, 8, 9, 5, 8, 9, 8, 2, 1, 2])
    assert chart.median == 5
    assert "run.shift" not in rules(chart.signals)
    assert chart.longest_run == 5


# -- run chart: trend (5 or more all up or all down; ties neither count nor break) ----------------------------------


def test_trend_of_five_with_a_tie_inside_signals():
    # 3 4 5 5 6 7: the repeated 5 counts once, so five points go up (indexes 0-5 flagged)
    chart = spc.run_chart([3, 4, 5, 5, 6, 7, 2, 9, 1, 8])
    [trend] = only(chart.signals, "run.trend")
    assert trend.points == (0, 1, 2, 3, 4, 5)
    assert trend.direction == "up"
    assert "Trend: 5 consecutive points all going up" == trend.description


def test_falling_trend_of_five_signals():
    chart = spc.run_chart([5, 9, 8, 6, 4, 2, 7, 3, 6, 4])
    [trend] = only(chart.signals, "run.trend")
    assert trend.points == (1, 2, 3, 4, 5)
    assert trend.direction == "down"


def test_four_going_up_with_a_tie_is_no_trend():
    # 3 4 5 5 6 then down: the tie does not count, so only four points go up
    chart = spc.run_chart([3, 4, 5, 5, 6, 2, 9, 1, 8, 4])
    assert "run.trend" not in rules(chart.signals)


# -- run chart: number of runs ----------------------------------------------------------------------------------------


def test_runs_table_matches_the_published_rows_and_the_swed_eisenhart_probabilities():
    # 5 above and 5 below the median: C(10,5) = 252 orders; 2 runs in 2 ways, 3 runs in 2*C(4,1) = 8, 4 in 2*4*4 = 32
    distribution = spc._runs_distribution(5, 5)
    assert distribution[2] == pytest.approx(2 / 252)
    assert distribution[3] == pytest.approx(8 / 252)
    assert distribution[4] == pytest.approx(32 / 252)
    assert sum(distribution.values()) == pytest.approx(1)
    # P(R <= 2) = 0.8 % is too few, P(R <= 3) = 4.0 % is not (2.5 % a tail): 3..9, as in Perla et al.'s table
    assert spc.runs_limits(10) == (3, 9)
    assert spc.runs_limits(16) == (5, 13)
    assert spc.runs_limits(24) == (8, 18)
    assert spc.runs_limits(9) is None


def test_too_few_runs_signal():
    # median (3+7)/2 = 5: five below then five above is 2 runs, fewer than 3 for 10 points
    chart = spc.run_chart([1, 3, 2, 1, 3, 8, 7, 9, 8, 7])
    assert chart.median == 5 and chart.runs == 2 and chart.runs_limits == (3, 9)
    [few] = only(chart.signals, "run.too-few-runs")
    assert few.points == tuple(range(10))


def test_three_runs_among_ten_is_not_too_few():
    chart = spc.run_chart([1, 3, 2, 8, 7, 9, 8, 2, 1, 3])
    assert chart.runs == 3
    assert not rules(chart.signals) & {"run.too-few-runs", "run.too-many-runs"}


def test_too_many_runs_signal():
    # alternating around the median 5: 10 runs, more than 9 for 10 points
    chart = spc.run_chart([1, 9, 2, 8, 1, 9, 2, 8, 1, 9])
    assert chart.runs == 10
    assert "run.too-many-runs" in rules(chart.signals)


def test_nine_runs_among_ten_is_not_too_many():
    chart = spc.run_chart([1, 9, 2, 8, 1, 9, 2, 8, 9, 1])
    assert chart.runs == 9
    assert not rules(chart.signals) & {"run.too-few-runs", "run.too-many-runs"}


def test_no_runs_test_below_ten_useful_points():
    chart = spc.run_chart([1, 9, 1, 9, 1, 9, 1, 9])
    assert chart.runs == 8 and chart.runs_limits is None
    assert not rules(chart.signals)


# -- run chart: astronomical point ----------------------------------------------------------------------------------


def test_astronomical_point_signals():
    # median 10.5; absolute deviations .5 .5 1.5 .5 1.5 39.5 .5 .5 1.5 .5 -> MAD 0.5; reach 3.5 * 0.5 / 0.6745 = 2.594
    chart = spc.run_chart([10, 11, 9, 10, 12, 50, 11, 10, 9, 11])
    [point] = only(chart.signals, "run.astronomical")
    assert point.points == (5,)
    assert "2.59" in point.description and point.direction == "up"


def test_a_point_just_inside_the_reach_and_the_ends_of_a_trend_are_not_astronomical():
    # 13 is 2.5 from the median 10.5, inside the 2.594 reach
    assert "run.astronomical" not in rules(spc.run_chart([10, 11, 9, 10, 12, 13, 11, 10, 9, 11]).signals)
    assert "run.astronomical" not in rules(spc.run_chart(list(range(1, 11))).signals)


def test_a_stable_random_looking_series_has_no_run_chart_signal():
    # median 13.5; runs B|AA|BB|A|B|AA|BB|A = 8 within (4, 10); no 5 in a row up or down; MAD 1.5
    chart = spc.run_chart([12, 15, 16, 11, 13, 14, 12, 16, 15, 11, 12, 14])
    assert chart.signals == ()
    assert chart.median == 13.5 and chart.runs == 8 and chart.runs_limits == (4, 10)


# -- p-chart --------------------------------------------------------------------------------------------------------


def test_p_chart_limits_are_hand_computed_and_a_stable_series_does_not_signal():
    numerators = [12, 15, 8, 10, 4, 7, 16, 9, 14, 10]
    chart = spc.p_chart(numerators, [50] * 10)
    # p̄ = 105 / 500 = 0.21; sigma = sqrt(0.21 * 0.79 / 50) = 0.057602; limits 0.21 ± 0.172807
    assert chart.centre == pytest.approx(0.21)
    assert chart.sigma[0] == pytest.approx(0.057602, abs=1e-6)
    assert chart.upper[0] == pytest.approx(0.382807, abs=1e-6)
    assert chart.lower[0] == pytest.approx(0.037193, abs=1e-6)
    assert chart.signals == ()


def test_montgomery_orange_juice_cans_signal_at_samples_15_and_23():
    # Montgomery, Introduction to Statistical Quality Control, Example 7.1 (Table 7.1): 30 samples of 50 cans.
    # p̄ = 347/1500 = 0.2313, UCL 0.4102, LCL 0.0524; samples 15 (22/50) and 23 (24/50) are above the UCL.
    nonconforming = [12, 15, 8, 10, 4, 7, 16, 9, 14, 10, 5, 6, 17, 12, 22,
                     8, 10, 5, 13, 11, 20, 18, 24, 15, 9, 12, 7, 13, 9, 6]
    chart = spc.p_chart(nonconforming, [50] * 30)
    assert chart.centre == pytest.approx(0.231333, abs=1e-6)
    assert chart.upper[0] == pytest.approx(0.4102, abs=1e-4)
    assert chart.lower[0] == pytest.approx(0.0524, abs=1e-4)
    assert [s.points for s in only(chart.signals, "p.outside-limits")] == [(14,), (22,)]


def test_p_chart_limits_step_with_the_denominator_and_a_point_above_signals():
    chart = spc.p_chart([10, 12, 30, 11], [50, 40, 60, 55])
    # p̄ = 63 / 205 = 0.307317; p̄(1 - p̄) = 0.212874
    assert chart.centre == pytest.approx(63 / 205)
    expected_upper = [0.503068, 0.526171, 0.486010, 0.493957]  # p̄ + 3 sqrt(0.212874 / n) for n = 50, 40, 60, 55
    expected_lower = [0.111566, 0.088463, 0.128624, 0.120677]
    assert chart.upper == pytest.approx(expected_upper, abs=1e-5)
    assert chart.lower == pytest.approx(expected_lower, abs=1e-5)
    [outside] = only(chart.signals, "p.outside-limits")
    assert outside.points == (2,) and outside.direction == "up"  # 30/60 = 0.5 > 0.486
    assert "50.0%" in outside.description


def test_p_chart_limits_are_clamped_to_zero_and_one():
    low = spc.p_chart([0, 1, 0, 0], [5, 5, 5, 5])  # p̄ 0.05, 3 sigma 0.2924: the lower limit would be negative
    assert low.lower == (0.0, 0.0, 0.0, 0.0)
    assert low.upper[0] == pytest.approx(0.05 + 3 * (0.05 * 0.95 / 5) ** 0.5)
    high = spc.p_chart([5, 4, 5, 5], [5, 5, 5, 5])
    assert high.upper == (1.0, 1.0, 1.0, 1.0)


def test_p_chart_point_below_the_lower_limit_signals():
    chart = spc.p_chart([40, 42, 38, 41, 10, 40], [100] * 6)
    # p̄ = 211/600 = 0.351667, sigma 0.047712, LCL 0.208531: 0.10 is below it
    [outside] = only(chart.signals, "p.outside-limits")
    assert outside.points == (4,) and outside.direction == "down"


def test_p_chart_shift_of_eight_signals_and_seven_does_not():
    # p̄ 0.2, sigma sqrt(0.16/50) = 0.056569: 0.1 and 0.3 are inside the 2-sigma band (0.0869..0.3131)
    chart = spc.p_chart([5] * 8 + [15] * 8, [50] * 16)
    shifts = only(chart.signals, "p.shift")
    assert [s.points for s in shifts] == [tuple(range(8)), tuple(range(8, 16))]
    assert rules(chart.signals) == {"p.shift"}
    assert "p.shift" not in rules(spc.p_chart([5] * 7 + [15] * 7, [50] * 14).signals)


def test_p_chart_trend_of_six_signals_and_five_does_not():
    # p̄ 0.15, sigma 0.035707: 0.20 stays inside the 2-sigma line 0.2214
    chart = spc.p_chart([10, 12, 14, 16, 18, 20], [100] * 6)
    [trend] = only(chart.signals, "p.trend")
    assert trend.points == (0, 1, 2, 3, 4, 5)
    assert "p.trend" not in rules(spc.p_chart([10, 12, 14, 16, 18], [100] * 5).signals)


def test_p_chart_two_of_three_in_the_outer_third_signals():
    # p̄ = 222/1000 = 0.222, sigma 0.041559: 2-sigma line 0.305118, UCL 0.346677; 0.31 is between them
    chart = spc.p_chart([20, 20, 20, 31, 20, 31, 20, 20, 20, 20], [100] * 10)
    assert chart.upper[0] == pytest.approx(0.346677, abs=1e-6)
    [two] = only(chart.signals, "p.two-of-three")
    assert two.points == (3, 5) and two.direction == "up"
    assert rules(chart.signals) == {"p.two-of-three"}


def test_p_chart_two_beyond_two_sigma_but_not_within_three_points_do_not_signal():
    chart = spc.p_chart([20, 20, 20, 31, 20, 20, 31, 20, 20, 20], [100] * 10)
    assert chart.signals == ()


def test_p_chart_hugging_fifteen_signals_and_fourteen_does_not():
    # alternating 0.20 / 0.21 around p̄: every point within 1 sigma (about 0.040)
    chart = spc.p_chart([20, 21] * 8, [100] * 16)
    [hug] = only(chart.signals, "p.hugging")
    assert hug.points == tuple(range(16))
    assert "p.hugging" not in rules(spc.p_chart([20, 21] * 7, [100] * 14).signals)


def test_p_chart_at_zero_percent_has_no_zone_signals():
    chart = spc.p_chart([0] * 16, [20] * 16)
    assert chart.centre == 0 and chart.upper[0] == 0 and chart.signals == ()


def test_p_chart_rejects_a_numerator_above_its_denominator():
    with pytest.raises(ValueError):
        spc.p_chart([6], [5])


# -- XmR (Making Data Count) -----------------------------------------------------------------------------------------


def test_xmr_limits_are_hand_computed_and_a_stable_series_does_not_signal():
    chart = spc.xmr_chart([5, 7, 6, 8, 6, 7, 5, 6, 7, 6])
    # mean 6.3; moving ranges 2 1 2 2 1 2 1 1 1 -> MR̄ 13/9 = 1.444444; limits 6.3 ± 2.66 × 1.444444 = 6.3 ± 3.842222
    assert chart.centre == pytest.approx(6.3)
    assert chart.mean_moving_range == pytest.approx(13 / 9)
    assert chart.upper[0] == pytest.approx(10.142222, abs=1e-6)
    assert chart.lower[0] == pytest.approx(2.457778, abs=1e-6)
    assert chart.moving_range_upper == pytest.approx(4.718999, abs=1e-6)
    assert chart.moving_ranges == (None, 2, 1, 2, 2, 1, 2, 1, 1, 1)
    assert chart.signals == ()


def test_xmr_point_above_the_limit_and_its_moving_range_signal():
    chart = spc.xmr_chart([5, 7, 6, 8, 6, 7, 5, 6, 7, 15])
    # mean 7.2; MR̄ = 20/9 = 2.2222; UPL 7.2 + 5.9111 = 13.1111; MR UCL 3.267 × 2.2222 = 7.26 < 8
    assert chart.upper[0] == pytest.approx(13.111111, abs=1e-6)
    [outside] = only(chart.signals, "xmr.outside-limits")
    assert outside.points == (9,)
    [jump] = only(chart.signals, "mr.outside-limit")
    assert jump.points == (9,) and jump.chart == "mr"


def test_xmr_seven_on_one_side_of_the_mean_signals_and_six_does_not():
    chart = spc.xmr_chart([3, 4, 3, 4, 3, 8, 9, 8, 9, 8, 9, 8])  # mean 76/12 = 6.33
    [shift] = only(chart.signals, "xmr.shift")
    assert shift.points == tuple(range(5, 12))
    assert "xmr.shift" not in rules(spc.xmr_chart([3, 4, 3, 4, 3, 4, 8, 9, 8, 9, 8, 9]).signals)


def test_xmr_a_point_on_the_mean_breaks_the_run():
    # mean 72/12 = 6 exactly: the 6 at index 3 splits seven points above it into 3 + 4 (NHSRplotthedots: side 0)
    series = [8, 8, 8, 6, 8, 8, 8, 8, 2, 3, 2, 3]
    chart = spc.xmr_chart(series)
    assert chart.centre == pytest.approx(6)
    assert "xmr.shift" not in rules(chart.signals)


def test_xmr_seven_increasing_signals_and_six_or_a_tie_do_not():
    chart = spc.xmr_chart([4, 5, 4, 5, 1, 2, 3, 4, 5, 6, 7])
    [trend] = only(chart.signals, "xmr.trend")
    assert trend.points == (4, 5, 6, 7, 8, 9, 10)
    assert "xmr.trend" not in rules(spc.xmr_chart([4, 5, 4, 5, 2, 3, 4, 5, 6, 7]).signals)
    assert "xmr.trend" not in rules(spc.xmr_chart([5, 4, 1, 2, 3, 3, 4, 5, 6, 7]).signals)


def test_xmr_two_of_three_near_a_limit_signals():
    chart = spc.xmr_chart([10, 10, 10, 10, 13, 10, 13, 10, 10, 10])
    # mean 10.6; MR̄ 12/9 = 1.3333; near-limit line 10.6 + (2/3)(2.66)(1.3333) = 12.9644; UPL 14.1467
    assert chart.upper[0] == pytest.approx(14.146667, abs=1e-6)
    [two] = only(chart.signals, "xmr.two-of-three")
    assert two.points == (4, 6) and two.direction == "up"


def test_xmr_two_near_a_limit_too_far_apart_or_on_opposite_sides_do_not_signal():
    assert "xmr.two-of-three" not in rules(spc.xmr_chart([10, 10, 10, 10, 13, 10, 10, 13, 10, 10]).signals)
    assert "xmr.two-of-three" not in rules(spc.xmr_chart([10, 10, 10, 10, 13, 10, 7, 10, 10, 10]).signals)


# -- analyse(): chart choice, suppressed points, direction ---------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    id: str
    title: str
    kind: str
    unit: str
    improvement: str = "increase"


@dataclass(frozen=True)
class Point:
    period_start: date
    period_end: date
    numerator: int | None
    denominator: int | None
    value: float | None
    suppressed: bool = False


@dataclass(frozen=True)
class Result:
    measure: Measure
    points: list[Point]
    kind: str
    strata: dict[str, list[Point]] = field(default_factory=dict)


def weekly(rows) -> list[Point]:
    """Return weekly points from (numerator, denominator, value, suppressed) rows."""
    start = date(2026, 9, 7)
    points = []
    for i, (num, den, value, suppressed) in enumerate(rows):
        begin = start + timedelta(weeks=i)
        points.append(Point(begin, begin + timedelta(days=6), num, den, value, suppressed))
    return points


def test_analyse_uses_a_p_chart_for_proportions_and_leaves_suppressed_points_out():
    low, high, hidden = (5, 50, 0.1, False), (15, 50, 0.3, False), (None, None, None, True)
    rows = [low] * 4 + [hidden] + [low] * 4 + [high] * 8
    result = Result(Measure("m", "M", "proportion", "%"), weekly(rows), "proportion")
    analysis = spc.analyse(result)
    assert analysis.control.kind == "p"
    # p̄ = (8·5 + 8·15) / (16·50) = 0.2: the suppressed week counts in neither sum
    assert analysis.control.centre == pytest.approx(0.2)
    assert analysis.values[4] is None and analysis.control.upper[4] is None
    shifts = only(analysis.signals, "p.shift")
    # eight points below the centre around the gap keep their x-axis positions 0-3 and 5-8
    assert [s.points for s in shifts] == [(0, 1, 2, 3, 5, 6, 7, 8), tuple(range(9, 17))]
    assert [s.assessment for s in shifts] == ["concern", "improvement"]
    assert any("suppressed" in note for note in analysis.notes)
    assert analysis.run.median == pytest.approx(0.2)


def test_analyse_uses_xmr_for_continuous_measures_and_judges_direction():
    values = [3, 4, 3, 4, 3, 4, 3, 8, 9, 8, 9, 8, 9, 8]  # mean 83/14 = 5.93, median (4 + 8)/2 = 6
    rows = [(None, None, v, False) for v in values]
    result = Result(Measure("days", "Days", "continuous", "days", "decrease"), weekly(rows), "continuous")
    analysis = spc.analyse(result)
    assert analysis.control.kind == "xmr"
    shifts = only(analysis.signals, "xmr.shift")
    # lower is better for this measure: seven below the mean is an improvement, seven above a concern
    assert [(s.points, s.direction, s.assessment) for s in shifts] == [
        (tuple(range(7)), "down", "improvement"), (tuple(range(7, 14)), "up", "concern")]
    assert "run.shift" in rules(analysis.run.signals)


def test_analyse_of_too_few_values_has_a_run_chart_and_no_limits():
    result = Result(Measure("days", "Days", "continuous", "days"), weekly([(None, None, 4.0, False)]), "continuous")
    analysis = spc.analyse(result)
    assert analysis.control is None
    assert analysis.run.median == 4.0
    assert analysis.signals == ()


def test_analyse_leaves_out_a_point_whose_numerator_exceeds_its_denominator():
    rows = [(5, 10, 0.5, False), (12, 10, 1.2, False), (6, 10, 0.6, False)]
    analysis = spc.analyse(Result(Measure("m", "M", "proportion", "%"), weekly(rows), "proportion"))
    assert analysis.values == (0.5, None, 0.6)
    assert analysis.control.centre == pytest.approx(11 / 20)
    assert any("numerator outside" in note for note in analysis.notes)
