"""The read-only quality-improvement dashboard at /dashboard: every measure's chart, latest value and signals.

Server-rendered HTML with no script and no external resource. Charts are inline SVG (no second authenticated fetch)
drawn with presentation attributes, and the page's one stylesheet is allowed by its hash, so the Content-Security-Policy
stays "default-src 'none'" plus that hash. Authentication is the same bearer token as the APIs (api.auth protects
/dashboard); coordinators, programme leads and administrators may see it (aggregates only, small cells suppressed).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from flask import Blueprint, Response, render_template, request

from api.auth import current_principal
from api.database import get_db, get_settings
from careplan.measures import charts, compute, spc, strata
from careplan.models import utcnow

bp = Blueprint("dashboard", __name__, template_folder="templates")
log = logging.getLogger(__name__)

ROLES = frozenset({"admin", "coordinator", "lead"})
PERIODS = {"week": "Last 12 weeks", "month": "Last 12 months"}
PERIOD_COUNT = 12
STRATIFIERS = {s.id: s.title for s in strata.STRATIFIERS}
STYLESHEET = (Path(__file__).parent / "templates" / "dashboard.css").read_text(encoding="utf-8")
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLESHEET.encode("utf-8")).digest()).decode("ascii")
# Nothing may load or run; only the page's own stylesheet (by hash) applies. Inline SVG needs nothing more. The
# period and stratifier form submits (GET) to this page only.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src '{STYLE_HASH}'; frame-ancestors 'none'; "
                           "base-uri 'none'; form-action 'self'")


@dataclass(frozen=True)
class Card:
    """What the page shows of one measure."""

    id: str
    title: str
    description: str
    direction: str
    chart: str | None  # inline SVG markup, None when the measure could not be evaluated
    latest_value: str
    latest_period: str
    latest_counts: str
    latest_note: str | None
    signals: tuple[tuple[str, str], ...]  # (css class, sentence)
    has_data: bool = True
    error: str | None = None
    stratum_note: str | None = None  # why the chart is not broken down by the chosen stratifier


@bp.get("/dashboard")
def show():
    """Show every measure's chart, latest value, denominator and signals for the last 12 weeks or months."""
    principal = current_principal()
    if principal is None or principal.role not in ROLES:
        role = principal.role if principal is not None else "anonymous"
        return _page("dashboard_error.html", 403, heading="Not allowed",
                     message=f"The measures dashboard is for coordinators, programme leads and administrators; "
                             f"a {role} may not see it.")
    period = request.args.get("period", "week")
    if period not in PERIODS:
        return _page("dashboard_error.html", 400, heading="Unknown period",
                     message="period must be week or month.")
    stratifier = request.args.get("stratifier") or None  # the form's "Overall" option sends an empty value
    if stratifier is not None and stratifier not in STRATIFIERS:
        return _page("dashboard_error.html", 400, heading="Unknown stratifier",
                     message=f"stratifier must be one of {', '.join(STRATIFIERS)}.")
    today = utcnow().date()
    start = _first_period_start(period, today)
    cards = [_card(definition, period=period, start=start, end=today, stratifier=stratifier)
             for definition in compute.list_measures()]
    return _page("dashboard.html", 200, cards=cards, period=period, periods=PERIODS, start=start, end=today,
                 stratifier=stratifier, stratifiers=STRATIFIERS,
                 evaluated_at=utcnow().strftime("%Y-%m-%d %H:%M UTC"))


def _page(template: str, status: int, **context) -> Response:
    html = render_template(template, stylesheet=STYLESHEET, **context)
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"  # aggregates of patient data: not for browser or shared caches
    return response


def _first_period_start(period: str, today: date) -> date:
    """Return the first day of the period 11 periods before the one containing today."""
    if period == "week":
        return today - timedelta(days=today.weekday()) - timedelta(weeks=PERIOD_COUNT - 1)
    months = today.year * 12 + today.month - 1 - (PERIOD_COUNT - 1)
    return date(months // 12, months % 12 + 1, 1)


def _card(definition, *, period: str, start: date, end: date, stratifier: str | None = None) -> Card:
    direction = {"increase": "Higher is better", "decrease": "Lower is better"}.get(
        getattr(definition, "improvement", ""), "")
    stratum_note = None
    if stratifier is not None and stratifier not in compute.stratifiers_for(definition):
        stratum_note = f"Not broken down by {STRATIFIERS[stratifier].lower()}: it does not apply to this measure."
        stratifier = None
    try:
        result = compute.evaluate(get_db(), measure_id=definition.id, period=period, start=start, end=end,
                                  stratifier=stratifier, settings=get_settings())
        analysis = spc.analyse(result)
        chart = charts.inline(charts.render(result, analysis, fmt="svg", stratified=stratifier is not None,
                                            id_prefix=f"m-{definition.id}-"))
    except Exception as exc:  # noqa: BLE001 - one failing measure must not take the whole page down
        # The type only: a message could quote data.
        log.error("dashboard: measure %s could not be evaluated: %s", definition.id, type(exc).__name__)
        return Card(definition.id, definition.title, definition.description, direction, None, "-", "", "", None, (),
                    has_data=False, error="This measure could not be computed just now; the error has been logged.")
    value, period_label, counts, note = _latest(result, definition)
    if stratifier is not None and not result.strata:
        stratum_note = f"No data to break down by {STRATIFIERS[stratifier].lower()} in these periods."
    return Card(definition.id, definition.title, definition.description, direction, chart, value, period_label,
                counts, note, tuple(_sentence(signal, result) for signal in analysis.signals),
                has_data=any(v is not None for v in analysis.values), stratum_note=stratum_note)


def _latest(result, definition) -> tuple[str, str, str, str | None]:
    """Return the latest period's value, its label, its counts, and a note when it is not the last period."""
    points = list(result.points)
    shown = next((p for p in reversed(points) if not p.suppressed and p.value is not None), None)
    note = None
    if points and shown is not points[-1]:
        last = points[-1]
        note = (f"{_period_label(last, result)}: suppressed (fewer than 5)" if last.suppressed
                else f"{_period_label(last, result)}: no data yet")
    if shown is None:
        return "No data", "", "", note
    if definition.kind == "proportion":
        value = f"{100 * shown.value:.1f}%"
        counts = f"{shown.numerator} of {shown.denominator}" if shown.denominator is not None else ""
    else:
        value = f"{shown.value:.1f} {definition.unit}".strip()
        counts = f"n = {shown.denominator}" if shown.denominator is not None else ""
    return value, _period_label(shown, result), counts, note


def _period_label(point, result) -> str:
    if getattr(result, "period", None) == "month":
        return point.period_start.strftime("%B %Y")
    return f"week of {point.period_start.isoformat()}"


def _sentence(signal: spc.Signal, result) -> tuple[str, str]:
    """Return a signal in words, with the periods it flags and whether it is good news."""
    points = list(result.points)
    flagged = [points[i] for i in signal.points if 0 <= i < len(points)]
    where = ""
    if flagged and signal.rule not in charts.RUNS_COUNT_RULES:
        first, last = _period_label(flagged[0], result), _period_label(flagged[-1], result)
        where = f" ({first})" if first == last else f" ({first} to {last})"
    verdict = {"improvement": " - an improvement", "concern": " - a concern"}.get(signal.assessment or "", "")
    return signal.assessment or "neutral", f"{signal.description}{where}{verdict}."
