"""The coordinator's worklist, grouped by practice tier."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import error_responses, reference, require_coordination_role
from careplan.coordination import worklist

URL_PREFIX = "/worklist"
blp = Blueprint("v1_worklist", __name__, description="What the coordinator does next")
blp.before_request(require_coordination_role)


class WorklistArgs(ma.Schema):
    """Whose worklist and how far ahead."""

    coordinator = reference(description="Whose plans (default: the caller)", example="Practitioner/coordinator-1")
    within_days = ma.fields.Integer(load_default=7, validate=ma.validate.Range(min=0, max=365),
                                    metadata={"description": "Include what falls due within this many days",
                                              "example": 7})


class ItemSchema(ma.Schema):
    """A follow-up, a goal to review or a referral waiting on a partner."""

    kind = ma.fields.String(required=True, metadata={"description": "follow-up | goal-review | referral"})
    state = ma.fields.String(required=True, metadata={"description": "overdue | due | waiting"})
    due = ma.fields.String(required=True, metadata={"description": "Due date (YYYY-MM-DD)"})
    patient = ma.fields.String(allow_none=True)
    description = ma.fields.String(allow_none=True)
    practice = ma.fields.String(allow_none=True, metadata={"description": "Canonical url of the practice"})
    tier = ma.fields.String(allow_none=True)
    care_plan = ma.fields.String()
    activity = ma.fields.String(allow_none=True)
    performer = ma.fields.List(ma.fields.String())
    last_contact = ma.fields.String()
    goal = ma.fields.String()
    task = ma.fields.String()
    status = ma.fields.String()
    owner = ma.fields.String(allow_none=True)


class GroupSchema(ma.Schema):
    """The items of one tier (tier null: tied to no practice)."""

    tier = ma.fields.String(allow_none=True)
    label = ma.fields.String(required=True)
    items = ma.fields.List(ma.fields.Nested(ItemSchema), required=True)


class WorklistSchema(ma.Schema):
    """A coordinator's worklist."""

    coordinator = ma.fields.String(allow_none=True)
    today = ma.fields.String(required=True)
    within_days = ma.fields.Integer(required=True)
    groups = ma.fields.List(ma.fields.Nested(GroupSchema), required=True)


@blp.route("")
class Worklist(MethodView):
    @blp.arguments(WorklistArgs, location="query")
    @blp.response(200, WorklistSchema, example={
        "coordinator": "Practitioner/coordinator-1", "today": "2026-11-22", "within_days": 7,
        "groups": [{"tier": "recommended", "label": "recommended", "items": [{
            "kind": "follow-up", "state": "overdue", "due": "2026-11-20", "patient": "Patient/f3a9c2",
            "care_plan": "cp1", "activity": "a1", "description": "Peer support", "tier": "recommended",
            "practice": "https://careplan.example.org/fhir/PlanDefinition/peer-support", "performer": [],
            "last_contact": "2026-11-06T10:00:00Z"}]}]})
    @error_responses(blp, 400, 401, 403, 422)
    def get(self, args):
        """The calling coordinator's worklist, grouped by tier

        Follow-ups due or overdue (one cadence period after the last progress note, or without one after the
        activity's start, else the plan's; `last_contact` is that moment), goals due for review
        (target dates) and referrals waiting on a partner (Task requested/received/accepted/ready), grouped
        recommended, promising, emerging, then those tied to no practice.
        """
        return worklist.build(get_db(), coordinator=args.get("coordinator"), within_days=args["within_days"])

