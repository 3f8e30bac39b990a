"""Quality-improvement measures (issue 8): definitions, weekly or monthly values by stratum, drill-down, charts."""

from __future__ import annotations

from datetime import date, timedelta

import marshmallow as ma
from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import current_principal
from api.database import get_db, get_settings
from api.v1.common import error_responses
from careplan.coordination.errors import RuleViolation
from careplan.errors import Forbidden
from careplan.measures import compute, strata
from careplan.measures.definitions import MeasureDefinition
from careplan.models import utcnow

URL_PREFIX = "/measures"
blp = Blueprint("v1_measures", __name__, description="Quality-improvement measures, by week or month and stratum")
# Programme leads read the aggregates too; the drill-down reads each member as the caller, so a lead (who may see no
# patient data) gets every member counted in `hidden` and none listed.
MEASURE_ROLES = frozenset({"admin", "coordinator", "lead"})


@blp.before_request
def require_measure_role() -> None:
    """Before each request: only coordinators, programme leads and administrators may use the measures."""
    principal = current_principal()
    if principal is not None and principal.role not in MEASURE_ROLES:
        raise Forbidden(f"The measures are for coordinators and programme leads; a {principal.role} client may not "
                        "use them")


DEFAULT_SPAN = {"week": timedelta(weeks=25), "month": timedelta(days=365)}
DATE_RANGE = ma.validate.Range(min=date(1900, 1, 1), max=date(2199, 12, 31))
POINT_EXAMPLE = {"period_start": "2026-09-01", "period_end": "2026-09-30", "numerator": 5, "denominator": 8,
                 "value": 0.625, "suppressed": False}


def errors(*codes: int):
    """Document a view's error responses."""
    return error_responses(blp, *codes)


class MeasureDefinitionSchema(ma.Schema):
    """A measure's written definition."""

    id = ma.fields.String(required=True, metadata={"example": "ccp-within-30-days"})
    title = ma.fields.String(required=True)
    description = ma.fields.String()
    population = ma.fields.String()
    numerator = ma.fields.String()
    denominator = ma.fields.String()
    exclusions = ma.fields.String()
    kind = ma.fields.String(metadata={"description": "proportion | continuous"})
    unit = ma.fields.String(metadata={"description": "proportion (0-1) or days"})
    subject = ma.fields.String(metadata={"description": "patient | referral | reminder | activity | discharge"})
    period_event = ma.fields.String(metadata={"description": "What places a member in a period"})
    improvement = ma.fields.String(metadata={"description": "increase | decrease"})
    url = ma.fields.String(metadata={"description": "Canonical URL of the FHIR Measure"})
    stratifiers = ma.fields.List(ma.fields.String())


class MeasureStratifierSchema(ma.Schema):
    """An equity dimension and where its data lives."""

    id = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    source = ma.fields.String()


class MeasureListSchema(ma.Schema):
    """Every measure, and the stratifiers they can be broken down by."""

    measures = ma.fields.List(ma.fields.Nested(MeasureDefinitionSchema), required=True)
    stratifiers = ma.fields.List(ma.fields.Nested(MeasureStratifierSchema), required=True)
    small_cell_max = ma.fields.Integer(metadata={"description": "Counts from 1 to this are suppressed"})


class MeasurePointSchema(ma.Schema):
    """One period: counts and value are null when suppressed (value null also when there is nothing to count)."""

    period_start = ma.fields.Date(required=True)
    period_end = ma.fields.Date(required=True)
    numerator = ma.fields.Integer(allow_none=True)
    denominator = ma.fields.Integer(allow_none=True)
    value = ma.fields.Float(allow_none=True)
    suppressed = ma.fields.Boolean(required=True)


class MeasureResultSchema(ma.Schema):
    """A measure over consecutive periods, overall and by stratum."""

    measure = ma.fields.Nested(MeasureDefinitionSchema, required=True)
    kind = ma.fields.String(required=True)
    period = ma.fields.String(required=True)
    start = ma.fields.Date(required=True)
    end = ma.fields.Date(required=True)
    stratifier = ma.fields.String(allow_none=True)
    points = ma.fields.List(ma.fields.Nested(MeasurePointSchema), required=True)
    strata = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.Nested(MeasurePointSchema)))
    evaluated_at = ma.fields.DateTime()


class MeasureMemberSchema(ma.Schema):
    """A person, referral, reminder, activity or discharge the measure counted."""

    reference = ma.fields.String(required=True, metadata={"example": "Task/t1"})
    patient = ma.fields.String(allow_none=True, metadata={"example": "Patient/f3a9c2"})
    event = ma.fields.Date(required=True)
    in_numerator = ma.fields.Boolean()
    value = ma.fields.Float(allow_none=True)
    tier = ma.fields.String(allow_none=True)
    excluded = ma.fields.String(allow_none=True)


class MeasureMembersSchema(ma.Schema):
    """The members of one period, as far as the caller may see them."""

    measure = ma.fields.String(required=True)
    period = ma.fields.String(required=True)
    period_start = ma.fields.Date(required=True)
    period_end = ma.fields.Date(required=True)
    numerator = ma.fields.List(ma.fields.Nested(MeasureMemberSchema), required=True)
    denominator = ma.fields.List(ma.fields.Nested(MeasureMemberSchema), required=True)
    excluded = ma.fields.List(ma.fields.Nested(MeasureMemberSchema), required=True)
    hidden = ma.fields.Integer(metadata={"description": "Members left out because the caller may not see them"})


class MeasureEvaluateArgs(ma.Schema):
    """Which periods and which stratifier."""

    period = ma.fields.String(load_default="month", validate=ma.validate.OneOf(("week", "month")),
                              metadata={"description": "ISO weeks (from Monday) or calendar months, UTC"})
    start = ma.fields.Date(validate=DATE_RANGE,
                           metadata={"description": "First day (default: about a year, or 26 weeks, before end)",
                                     "example": "2026-01-01"})
    end = ma.fields.Date(validate=DATE_RANGE, metadata={"description": "Last day (default: today)",
                                                        "example": "2026-11-30"})
    stratifier = ma.fields.String(validate=ma.validate.OneOf([s.id for s in strata.STRATIFIERS]),
                                  metadata={"description": "Equity dimension to break the measure down by",
                                            "example": "age-band"})

    @ma.validates_schema
    def _order(self, data, **kwargs):
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise ma.ValidationError("end must not be before start", "end")


class MeasureMembersArgs(ma.Schema):
    """Which period to open."""

    period = ma.fields.String(load_default="month", validate=ma.validate.OneOf(("week", "month")))
    period_start = ma.fields.Date(required=True, validate=DATE_RANGE, metadata={"description": "Any day of the period",
                                                          "example": "2026-09-01"})


MEMBER_EXAMPLE = {"reference": "Task/t1", "patient": "Patient/p1", "event": "2026-10-03", "in_numerator": True,
                  "value": None, "tier": None, "excluded": None}


def definition_json(measure: MeasureDefinition) -> dict:
    """Return a measure's definition as JSON."""
    return {"id": measure.id, "title": measure.title, "description": measure.description,
            "population": measure.population, "numerator": measure.numerator, "denominator": measure.denominator,
            "exclusions": measure.exclusions, "kind": measure.kind, "unit": measure.unit, "subject": measure.subject,
            "period_event": measure.period_event, "improvement": measure.improvement, "url": measure.url,
            "stratifiers": compute.stratifiers_for(measure)}


def _point(point: compute.Point) -> dict:
    return {"period_start": point.period_start, "period_end": point.period_end, "numerator": point.numerator,
            "denominator": point.denominator, "value": point.value, "suppressed": point.suppressed}


def result_json(result: compute.Result) -> dict:
    """Return an evaluated measure as JSON."""
    return {"measure": definition_json(result.measure), "kind": result.kind, "period": result.period,
            "start": result.start, "end": result.end, "stratifier": result.stratifier,
            "points": [_point(p) for p in result.points],
            "strata": {key: [_point(p) for p in points] for key, points in result.strata.items()},
            "evaluated_at": result.evaluated_at}


def _member(member: compute.Member) -> dict:
    return {"reference": member.reference, "patient": f"Patient/{member.patient}" if member.patient else None,
            "event": member.event, "in_numerator": member.in_numerator, "value": member.value, "tier": member.tier,
            "excluded": member.excluded}


def evaluate(measure_id: str, args: dict) -> compute.Result:
    """Evaluate a measure for the query's periods and stratifier."""
    period = args.get("period", "month")
    end = args.get("end") or utcnow().date()
    start = args.get("start") or end - DEFAULT_SPAN[period]
    if start > end:
        raise RuleViolation("end must not be before start", errors={"end": ["before start"]}, location="query")
    return compute.evaluate(get_db(), measure_id=measure_id, period=period, start=start, end=end,
                            stratifier=args.get("stratifier"), settings=get_settings())


@blp.route("")
class Measures(MethodView):
    @blp.response(200, MeasureListSchema, example={
        "measures": [{"id": "ccp-within-30-days", "title": "Active coordinated care plan within 30 days",
                      "kind": "proportion"}],
        "stratifiers": [{"id": "age-band", "title": "Age band", "source": "Patient.birthDate"}],
        "small_cell_max": 4})
    @errors(401, 403)
    def get(self):
        """The measures and their written definitions

        Each measure's population, numerator, denominator, exclusions and the event that places a member in a
        period; the equity stratifiers and where their data lives in FHIR.
        """
        return {"measures": [definition_json(m) for m in compute.list_measures()],
                "stratifiers": [{"id": s.id, "title": s.title, "source": s.source} for s in strata.STRATIFIERS],
                "small_cell_max": strata.SMALL_CELL_MAX}


@blp.route("/<string:measure_id>")
class MeasureById(MethodView):
    @blp.arguments(MeasureEvaluateArgs, location="query")
    @blp.response(200, MeasureResultSchema, example={
        "measure": {"id": "ccp-within-30-days", "title": "Active coordinated care plan within 30 days"},
        "kind": "proportion", "period": "month", "start": "2026-09-01", "end": "2026-10-31", "stratifier": None,
        "points": [POINT_EXAMPLE, {**POINT_EXAMPLE, "period_start": "2026-10-01", "period_end": "2026-10-31",
                                   "numerator": None, "denominator": None, "value": None, "suppressed": True}],
        "strata": {}})
    @errors(400, 401, 403, 404, 422)
    def get(self, args, measure_id):
        """A measure by week or month, overall and by stratum

        Counts of 1 to 4 (numerator or denominator) are suppressed, with complementary suppression across strata.
        """
        return result_json(evaluate(measure_id, args))


@blp.route("/<string:measure_id>/members")
class MeasureMembers(MethodView):
    @blp.arguments(MeasureMembersArgs, location="query")
    @blp.response(200, MeasureMembersSchema, example={
        "measure": "closed-loop-30-days", "period": "month", "period_start": "2026-10-01",
        "period_end": "2026-10-31", "numerator": [MEMBER_EXAMPLE], "denominator": [MEMBER_EXAMPLE],
        "excluded": [], "hidden": 0})
    @errors(400, 401, 403, 404, 422)
    def get(self, args, measure_id):
        """Drill down: who is in the numerator and denominator of one period

        Each member is read as the caller through the store's policy (and audited); members the caller may not
        see are left out and counted in `hidden` (a programme lead sees none). Not suppressed: this is for people
        allowed to see the patients.
        """
        found = compute.visible_members(get_db(), measure_id=measure_id, period=args["period"],
                                        period_start=args["period_start"], settings=get_settings())
        return {"measure": found["measure"].id, "period": args["period"], "period_start": found["period_start"],
                "period_end": found["period_end"], "numerator": [_member(m) for m in found["numerator"]],
                "denominator": [_member(m) for m in found["denominator"]],
                "excluded": [_member(m) for m in found["excluded"]], "hidden": found["hidden"]}


CHART_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def _chart(measure_id: str, args: dict, fmt: str) -> Response:
    from careplan.measures import charts, spc

    result = evaluate(measure_id, args)
    body = charts.render(result, spc.analyse(result), fmt=fmt, stratified=bool(result.stratifier))
    return Response(body, mimetype=CHART_TYPES[fmt])


@blp.route("/<string:measure_id>/chart.png")
class MeasureChartPng(MethodView):
    @blp.arguments(MeasureEvaluateArgs, location="query")
    @blp.response(200, content_type="image/png", description="The run chart or SPC chart as PNG")
    @blp.doc(responses={"200": {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})
    @errors(400, 401, 403, 404, 422)
    def get(self, args, measure_id):
        """The measure's chart (PNG): centre line, limits, signals, strata as series"""
        return _chart(measure_id, args, "png")


@blp.route("/<string:measure_id>/chart.svg")
class MeasureChartSvg(MethodView):
    @blp.arguments(MeasureEvaluateArgs, location="query")
    @blp.response(200, content_type="image/svg+xml", description="The run chart or SPC chart as SVG")
    @blp.doc(responses={"200": {"content": {"image/svg+xml": {"schema": {"type": "string", "format": "binary"}}}}})
    @errors(400, 401, 403, 404, 422)
    def get(self, args, measure_id):
        """The measure's chart (SVG): centre line, limits, signals, strata as series"""
        return _chart(measure_id, args, "svg")
