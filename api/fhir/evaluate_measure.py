"""Measure $evaluate-measure: a careplan measure over one period as a MeasureReport (summary or subject-list).

https://hl7.org/fhir/R4/operation-measure-evaluate-measure.html (the operation; R4 names the report types subject,
subject-list and population) and https://hl7.org/fhir/R4/measurereport.html

``GET /fhir/Measure/{id}/$evaluate-measure?periodStart=&periodEnd=&reportType=``. periodStart and periodEnd, both
required, are dates from 1900 to 2199 (YYYY, YYYY-MM or YYYY-MM-DD; a partial periodEnd means the end of that year
or month).
reportType: ``summary`` (R4's ``population``; the default) answers counts and scores with every stratifier that
has data, small cells masked; ``subject-list`` adds contained Lists of the numerator and denominator members the
caller may see, each read through the store's policy and audited, and is for coordinators and administrators
(summary also for EHR clients and programme leads).
The R4 ``subject`` report type (one patient) is not supported.
"""

from __future__ import annotations

import calendar
import re
from datetime import date

from flask import request

from api.auth import current_principal
from api.database import get_db, get_settings
from api.fhir.http import fhir_json
from careplan.coordination.errors import CoordinationError
from careplan.errors import Forbidden, InvalidRequest, NotFound
from careplan.measures import compute
from careplan.measures import fhir as measure_fhir

SUMMARY_ROLES = frozenset({"admin", "coordinator", "ehr", "lead"})  # aggregates, small cells masked
SUBJECT_LIST_ROLES = frozenset({"admin", "coordinator"})  # lists patients: never a programme lead
REPORT_TYPES = {"summary": "summary", "population": "summary", "subject-list": "subject-list"}
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T.*)?$")
MAX_DAYS = 3660


def evaluate_measure(resource_type: str, resource_id: str):
    """Evaluate Measure/{id} over periodStart..periodEnd and return the MeasureReport."""
    if resource_type != "Measure":
        raise NotFound(f"$evaluate-measure is only defined on Measure, not on {resource_type}")
    try:
        measure = compute.definition(resource_id)
    except CoordinationError:
        raise NotFound(f"Measure/{resource_id[:64]} is not a measure this server evaluates") from None
    report_type = REPORT_TYPES.get(request.args.get("reportType", "summary"))
    if report_type is None:
        raise InvalidRequest("reportType must be summary (or population) or subject-list; subject is not supported",
                             expression="reportType", code="not-supported")
    principal = current_principal()
    role = principal.role if principal is not None else None
    allowed = SUBJECT_LIST_ROLES if report_type == "subject-list" else SUMMARY_ROLES
    if role not in allowed:
        raise Forbidden(f"A {role} client may not ask for a {report_type} report of a measure")
    start = _date(request.args.get("periodStart"), "periodStart", end=False)
    end = _date(request.args.get("periodEnd"), "periodEnd", end=True)
    if end < start:
        raise InvalidRequest("periodEnd is before periodStart", expression="periodEnd")
    if (end - start).days > MAX_DAYS:
        raise InvalidRequest("The period may be at most ten years long", expression="periodEnd")
    db, settings = get_db(), get_settings()
    try:
        if report_type == "subject-list":
            overall = compute.evaluate(db, measure_id=measure.id, period="range", start=start, end=end,
                                       settings=settings)
            found = compute.visible_members(db, measure_id=measure.id, period="range", period_start=start,
                                            period_end=end, settings=settings)
            return fhir_json(measure_fhir.subject_list_report(overall, found))
        overall, by_stratifier = compute.evaluate_strata(
            db, measure_id=measure.id, period="range", start=start, end=end,
            stratifiers=compute.stratifiers_for(measure), settings=settings)
    except CoordinationError as error:
        raise InvalidRequest(error.message) from None
    return fhir_json(measure_fhir.summary_report(overall, by_stratifier))


def _date(text: str | None, name: str, *, end: bool) -> date:
    if not text:
        raise InvalidRequest(f"{name} is required (a date such as 2026-09-01)", expression=name, code="required")
    match = _DATE.match(text)
    try:
        if not match:
            raise ValueError
        year, month, day = int(match.group(1)), match.group(2), match.group(3)
        if not 1900 <= year <= 2199:
            raise ValueError
        if month is None:
            return date(year, 12, 31) if end else date(year, 1, 1)
        if day is None:
            last = calendar.monthrange(year, int(month))[1]
            return date(year, int(month), last if end else 1)
        return date(year, int(month), int(day))
    except ValueError:
        raise InvalidRequest(f"{name} must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD), not {text[:40]!r}",
                             expression=name) from None
