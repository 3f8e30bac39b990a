"""Reminders grouped by practice tier, and the outbox's dead letters for operators."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import PageArgs, Text, error_responses, next_link
from careplan.errors import Forbidden
from careplan.practices.tiers import TIER_ORDER
from careplan.reminders import service
from careplan.reminders.models import DELIVERY_STATES, REMINDER_STATES

URL_PREFIX = ""
blp = Blueprint("v1_reminders", __name__, description="Scheduled follow-up reminders and their deliveries")

RECIPIENT = ma.validate.Regexp(r"^(Practitioner|PractitionerRole|Organization)/[A-Za-z0-9\-.]{1,64}$",
                               error="Not a reference like Practitioner/123 or Organization/abc.")
REMINDER_EXAMPLE = {
    "id": 41, "key": "follow-up|CarePlan/cp1|a1|20261102T140000Z", "kind": "follow-up", "source": "CarePlan/cp1#a1",
    "recipient": "Practitioner/coord-1", "patient": "Patient/f3a9c2", "tier": "recommended", "state": "scheduled",
    "due_at": "2026-11-14T14:00:00+00:00", "done_at": None, "on_time": None,
    "details": {"care_plan": "CarePlan/cp1", "activity": "a1", "due": "2026-11-16T14:00:00+00:00",
                "practice": "https://careplan.example.org/fhir/PlanDefinition/peer-support", "cadence_days": 14}}

DELIVERY_EXAMPLE = {"id": 7, "reminder_id": 41, "channel": "webhook", "recipient": "Organization/harbour",
                    "idempotency_key": "reminder-41-webhook", "state": "dead", "attempts": 14,
                    "next_attempt_at": "2026-11-21T09:12:00+00:00", "last_error": "HTTP 503", "delivered_at": None}


class ReminderArgs(PageArgs):
    """Filters of the reminder listing."""

    status = ma.fields.String(validate=ma.validate.OneOf(REMINDER_STATES),
                              metadata={"description": "Reminder state", "example": "scheduled"})
    tier = ma.fields.String(validate=ma.validate.OneOf([*TIER_ORDER, service.NO_TIER]),
                            metadata={"description": "Practice tier, or `none` for reminders of no practice",
                                      "example": "recommended"})
    recipient = Text(validate=RECIPIENT, metadata={"description": "Who the reminder is for",
                                                   "example": "Practitioner/coord-1"})
    kind = ma.fields.String(validate=ma.validate.OneOf(service.KINDS), metadata={"example": "follow-up"})
    due_from = ma.fields.AwareDateTime(metadata={"description": "Due at or after (with an offset)",
                                                 "example": "2026-11-01T00:00:00Z"})
    due_to = ma.fields.AwareDateTime(metadata={"description": "Due at or before (with an offset)",
                                               "example": "2026-12-01T00:00:00Z"})


class ReminderSchema(ma.Schema):
    """A reminder: who is reminded of what, when, and whether it was done in time."""

    id = ma.fields.Integer(required=True)
    key = ma.fields.String(required=True, metadata={"description": "Deterministic key of the occurrence"})
    kind = ma.fields.String(required=True)
    source = ma.fields.String(required=True, metadata={"description": "What it is about (CarePlan/x#activity, "
                                                                      "Goal/y, Task/z)"})
    recipient = ma.fields.String(required=True)
    patient = ma.fields.String(allow_none=True)
    tier = ma.fields.String(allow_none=True)
    state = ma.fields.String(required=True, metadata={"description": "scheduled | claimed | sent | cancelled"})
    due_at = ma.fields.DateTime(required=True, metadata={"description": "When it is sent (UTC): the due moment in "
                                                                        "the recipient's local time, less the "
                                                                        "tier's lead, out of quiet hours"})
    done_at = ma.fields.DateTime(allow_none=True, metadata={"description": "When the follow-up was done"})
    on_time = ma.fields.Boolean(allow_none=True)
    details = ma.fields.Dict(metadata={"description": "References: care_plan, activity, goal, task, practice, due"})


class ReminderGroupSchema(ma.Schema):
    """The reminders of one tier on this page."""

    tier = ma.fields.String(allow_none=True)
    label = ma.fields.String(required=True)
    items = ma.fields.List(ma.fields.Nested(ReminderSchema), required=True)


class ReminderPageSchema(ma.Schema):
    """A page of reminders, grouped by tier (recommended, promising, emerging, then none)."""

    groups = ma.fields.List(ma.fields.Nested(ReminderGroupSchema), required=True)
    next = ma.fields.String(allow_none=True, metadata={"description": "URL of the next page; null on the last"})


class DeliveryArgs(PageArgs):
    """Which deliveries."""

    state = ma.fields.String(load_default="dead", validate=ma.validate.OneOf(DELIVERY_STATES),
                             metadata={"description": "Delivery state (default: dead letters)", "example": "dead"})


class ReminderDeliverySchema(ma.Schema):
    """One message of a reminder on one channel."""

    id = ma.fields.Integer(required=True)
    reminder_id = ma.fields.Integer(allow_none=True)
    channel = ma.fields.String(required=True)
    recipient = ma.fields.String(required=True)
    idempotency_key = ma.fields.String(required=True)
    state = ma.fields.String(required=True)
    attempts = ma.fields.Integer(required=True)
    next_attempt_at = ma.fields.DateTime(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    delivered_at = ma.fields.DateTime(allow_none=True)


class DeliveryPageSchema(ma.Schema):
    """A page of deliveries."""

    items = ma.fields.List(ma.fields.Nested(ReminderDeliverySchema), required=True)
    next = ma.fields.String(allow_none=True)


class RequeueSchema(ma.Schema):
    """The dead deliveries to send again."""

    ids = ma.fields.List(ma.fields.Integer(validate=ma.validate.Range(min=1, max=2**63 - 1)), required=True,
                         validate=ma.validate.Length(min=1, max=1000), metadata={"example": [7, 8]})


class RequeuedSchema(ma.Schema):
    """The requeued deliveries."""

    items = ma.fields.List(ma.fields.Nested(ReminderDeliverySchema), required=True)


def _require_admin() -> None:
    from api.auth import current_principal

    principal = current_principal()
    if principal is not None and principal.role != "admin":
        raise Forbidden("Only administrators may see and requeue deliveries")


@blp.route("/reminders")
class Reminders(MethodView):
    @blp.arguments(ReminderArgs, location="query")
    @blp.response(200, ReminderPageSchema, example={"groups": [{"tier": "recommended", "label": "recommended",
                                                                "items": [REMINDER_EXAMPLE]}], "next": None})
    @error_responses(blp, 400, 401, 403, 422)
    def get(self, args):
        """List reminders, grouped by practice tier

        Coordinators see reminders addressed to them and those about the patients whose care teams they
        coordinate; partner agencies those addressed to their organisation; administrators all. Ordered by
        tier (recommended, promising, emerging, then none), then due time; pages never split the order.
        """
        page = service.list_reminders(get_db(), state=args.get("status"), tier=args.get("tier"),
                                      recipient=args.get("recipient"), kind=args.get("kind"),
                                      due_from=args.get("due_from"), due_to=args.get("due_to"),
                                      limit=args["limit"], cursor=args.get("cursor"))
        return {"groups": service.group(page.items), "next": next_link(page.next_cursor)}


@blp.route("/deliveries")
class Deliveries(MethodView):
    @blp.arguments(DeliveryArgs, location="query")
    @blp.response(200, DeliveryPageSchema, example={"items": [DELIVERY_EXAMPLE], "next": None})
    @error_responses(blp, 400, 401, 403, 422)
    def get(self, args):
        """List outbox deliveries, dead letters by default (administrators)"""
        _require_admin()
        page = service.list_deliveries(get_db(), state=args["state"], limit=args["limit"],
                                       cursor=args.get("cursor"))
        return {"items": page.items, "next": next_link(page.next_cursor)}


@blp.route("/deliveries/requeue")
class Requeue(MethodView):
    @blp.arguments(RequeueSchema, example={"ids": [7]})
    @blp.response(200, RequeuedSchema, example={"items": [{**DELIVERY_EXAMPLE, "state": "pending", "attempts": 0}]})
    @error_responses(blp, 400, 401, 403, 404, 422)
    def post(self, data):
        """Send dead deliveries again, with a fresh retry window (administrators)"""
        _require_admin()
        return {"items": service.requeue_deliveries(get_db(), ids=sorted(set(data["ids"])))}
