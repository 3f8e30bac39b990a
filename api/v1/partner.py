"""Closed-loop referrals, partner side: the agency's inbox, its actions on a referral, and messages.

Only partner tokens that name their organisation may use it (others get 403). A referral that is not the caller's
organisation's answers 404, never 403, so its existence does not leak.
"""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import current_principal
from api.database import get_db, get_settings
from api.v1.common import PageArgs, error_responses, next_link, text
from api.v1.referrals import (
    MESSAGE_EXAMPLE,
    REFERRAL_EXAMPLE,
    TIMELINE_EXAMPLE,
    MessageCreateSchema,
    MessageListSchema,
    MessageSchema,
    ReferralDetailSchema,
    ReferralSchema,
)
from careplan.errors import Forbidden
from careplan.referrals import service as referrals

URL_PREFIX = "/partner"
blp = Blueprint("v1_partner", __name__, description="Referrals addressed to a partner agency (partners)")

PARTNER_REFERRAL_EXAMPLE = {**REFERRAL_EXAMPLE, "not_updated": False, "patient_details": {
    "id": "f3a9c2", "name": "Zoë Tremblay", "telecom": [{"system": "phone", "value": "+1 613 555 0100"}],
    "preferred_language": "fr-CA"}}


@blp.before_request
def require_partner_role() -> None:
    """Before each request: only partner agencies (with an organisation) may use the partner API."""
    principal = current_principal()
    if principal is None:
        return
    if principal.role != "partner":
        raise Forbidden(f"The partner API is for partner agencies; a {principal.role} client may not use it")
    if not principal.organization:
        raise Forbidden("The partner API needs a token that names the partner's organisation")


def _organization() -> str:
    return current_principal().organization


def errors(*codes: int):
    """Document a view's error responses."""
    return error_responses(blp, *codes)


class InboxArgs(PageArgs):
    """Filters of the inbox."""

    status = ma.fields.String(validate=ma.validate.OneOf(referrals.TASK_STATUSES),
                              metadata={"description": "One Task status (default: every open status)",
                                        "example": "requested"})


class CountsSchema(ma.Schema):
    """How many referrals need the agency."""

    new = ma.fields.Integer(required=True, metadata={"description": "Requested or received, not yet answered"})
    not_updated = ma.fields.Integer(required=True, metadata={"description": "Open, and not updated within the "
                                                                            "response service level"})
    overdue = ma.fields.Integer(required=True, metadata={"description": "Past the response or contact service "
                                                                        "level"})
    open = ma.fields.Integer(required=True)


class InboxSchema(ma.Schema):
    """The agency's referral inbox."""

    counts = ma.fields.Nested(CountsSchema, required=True)
    items = ma.fields.List(ma.fields.Nested(ReferralSchema), required=True)
    next = ma.fields.String(allow_none=True, metadata={"description": "URL of the next page; null on the last"})


class NoteSchema(ma.Schema):
    """An optional note."""

    note = text(max_length=4000, description="A note for the coordinator", example="Intake booked for Thursday")


class DeclineSchema(NoteSchema):
    """Why the agency declines."""

    reason_code = ma.fields.String(required=True, validate=ma.validate.OneOf(referrals.DECLINE_REASONS),
                                   metadata={"example": "no-capacity"})
    reason = text(max_length=2000, description="More about the reason", example="Waitlist closed until January")


class ReasonNoteSchema(NoteSchema):
    """Why (required)."""

    reason = text(required=True, max_length=2000, description="Why", example="Client in hospital this week")


class FailSchema(ReasonNoteSchema):
    """Why the work failed, optionally with a coded outcome."""

    outcome = ma.fields.String(validate=ma.validate.OneOf(referrals.OUTCOMES), metadata={
        "example": "could-not-contact"})


class CompleteSchema(NoteSchema):
    """What came of the referral."""

    outcome = ma.fields.String(required=True, validate=ma.validate.OneOf(referrals.OUTCOMES),
                               metadata={"example": "got-help"})
    procedure = ma.fields.String(validate=ma.validate.Regexp(r"^Procedure/[A-Za-z0-9\-.]{1,64}$",
                                                             error="Not a reference like Procedure/id."),
                                 metadata={"description": "A Procedure recording what was done",
                                           "example": "Procedure/p1"})


class BusinessStatusSchema(NoteSchema):
    """The agency's sub-state of an open referral."""

    business_status = ma.fields.String(required=True, validate=ma.validate.OneOf(referrals.BUSINESS_STATUSES),
                                       metadata={"example": "trying-to-reach-client"})


@blp.route("/referrals")
class Inbox(MethodView):
    @blp.arguments(InboxArgs, location="query")
    @blp.response(200, InboxSchema, example={"counts": {"new": 1, "not_updated": 0, "overdue": 0, "open": 1},
                                             "items": [PARTNER_REFERRAL_EXAMPLE], "next": None})
    @errors(400, 401, 403, 422)
    def get(self, args):
        """The agency's referral inbox: counts of new, not-updated and overdue referrals, and the referrals

        Oldest first, each with the minimum of the patient the consent allows, the need, priority, age and the
        service-level due dates and flags.
        """
        found = referrals.inbox(get_db(), organization=_organization(), settings=get_settings(),
                                statuses=[args["status"]] if args.get("status") else None, limit=args["limit"],
                                cursor=args.get("cursor"))
        return {"counts": found["counts"], "items": found["items"], "next": next_link(found["next_cursor"])}


@blp.route("/referrals/<string:task_id>")
class PartnerReferralById(MethodView):
    @blp.response(200, ReferralDetailSchema, example={**PARTNER_REFERRAL_EXAMPLE, "timeline": TIMELINE_EXAMPLE,
                                                      "service_request_resource": None})
    @errors(400, 401, 403, 404)
    def get(self, task_id):
        """Read one of the agency's referrals with its timeline"""
        return referrals.get_referral(get_db(), task_id=task_id, settings=get_settings(),
                                      organization=_organization())


def _act(task_id: str, action: str, data: dict) -> dict:
    """Carry out a partner action on one of the caller's referrals."""
    return referrals.act(get_db(), task_id=task_id, organization=_organization(), action=action,
                         settings=get_settings(), **data)


def _action(name: str, schema: type[ma.Schema], summary: str, example: dict, status: str):
    """Route POST /referrals/<task_id>/<name> to the partner action name, documented like the other views."""
    view_name = "".join(part.capitalize() for part in name.split("-"))

    def post(self, data, task_id):
        return _act(task_id, name, dict(data))

    post.__doc__ = summary
    # The same decorators, in the same order, as the class-based views of this API.
    post = blp.arguments(schema, example=example)(blp.response(
        200, ReferralSchema, example={**PARTNER_REFERRAL_EXAMPLE, "status": status})(errors()(post)))
    view = type(f"Partner{view_name}", (MethodView,), {"post": post})
    blp.route(f"/referrals/<string:task_id>/{name}")(view)
    return view


ACTIONS = (
    ("accept", NoteSchema, "Accept a referral (from requested or received)", {"note": "We can see her Thursday"},
     "accepted"),
    ("decline", DeclineSchema, "Decline a referral with a reason code", {"reason_code": "no-capacity"}, "rejected"),
    ("start", NoteSchema, "Start the work (in progress)", {}, "in-progress"),
    ("hold", ReasonNoteSchema, "Put the work on hold with a reason", {"reason": "Client in hospital"}, "on-hold"),
    ("resume", NoteSchema, "Resume on-hold work (in progress again)", {}, "in-progress"),
    ("complete", CompleteSchema, "Complete a referral with its outcome", {"outcome": "got-help"}, "completed"),
    ("fail", FailSchema, "Report that the work failed, with a reason",
     {"reason": "No answer after five calls", "outcome": "could-not-contact"}, "failed"),
    ("cancel", ReasonNoteSchema, "Cancel a referral the agency can no longer act on, with a reason",
     {"reason": "Program closed"}, "cancelled"),
    ("business-status", BusinessStatusSchema, "Record the agency's progress on an open referral",
     {"business_status": "trying-to-reach-client"}, "accepted"),
)
for _name, _schema, _summary, _example, _status in ACTIONS:
    _action(_name, _schema, _summary, _example, _status)


@blp.route("/referrals/<string:task_id>/messages")
class PartnerMessages(MethodView):
    @blp.response(200, MessageListSchema, example={"items": [MESSAGE_EXAMPLE]})
    @errors(400, 401, 403, 404)
    def get(self, task_id):
        """List the messages about one of the agency's referrals"""
        return {"items": referrals.list_messages(get_db(), task_id=task_id, organization=_organization())}

    @blp.arguments(MessageCreateSchema, example={"text": "Intake booked for Thursday"})
    @blp.response(201, MessageSchema, example=MESSAGE_EXAMPLE)
    @errors()
    def post(self, data, task_id):
        """Send a message about one of the agency's referrals to the coordinator"""
        return referrals.send_message(get_db(), task_id=task_id, text=data["text"], organization=_organization())
