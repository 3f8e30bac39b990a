"""Closed-loop referrals, coordinator side: refer from a care plan activity, follow, cancel, re-refer, message."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db, get_settings
from api.v1.common import PageArgs, error_responses, next_link, require_coordination_role, text
from careplan.referrals import service as referrals

URL_PREFIX = "/referrals"
blp = Blueprint("v1_referrals", __name__, description="Closed-loop referrals to partner agencies (coordinators)")
blp.before_request(require_coordination_role)

ID = ma.validate.Regexp(r"^[A-Za-z0-9\-.]{1,64}$", error="Not a FHIR id.")
ORGANIZATION = ma.validate.Regexp(r"^Organization/[A-Za-z0-9\-.]{1,64}$", error="Not a reference like Organization/id.")
PATIENT = ma.validate.Regexp(r"^Patient/[A-Za-z0-9\-.]{1,64}$", error="Not a reference like Patient/id.")
CONSENT = ma.validate.Regexp(r"^Consent/[A-Za-z0-9\-.]{1,64}$", error="Not a reference like Consent/id.")
CODE = ma.validate.Regexp(r"^[A-Za-z0-9\-._:]{1,64}$", error="Not a code.")

SLA_EXAMPLE = {"response_due": "2026-12-02T05:00:00Z", "response_overdue": False,
               "contact_due": "2026-12-07T05:00:00Z", "contact_overdue": False}
REFERRAL_EXAMPLE = {
    "id": "t1", "status": "requested", "business_status": None, "priority": "routine", "patient": "Patient/f3a9c2",
    "partner": "Organization/harbour", "requester": "Practitioner/coordinator-1", "care_plan": "CarePlan/cp1",
    "activity": "a1", "service_request": "ServiceRequest/sr1",
    "need": {"system": "https://careplan.example.org/fhir/CodeSystem/service-category", "code": "housing",
             "display": "Housing"},
    "reason": "Sleeping rough since October", "authored_on": "2026-11-30T14:00:00Z",
    "last_updated": "2026-11-30T14:00:00.000000Z", "age_days": 0, "sla": SLA_EXAMPLE, "overdue": False,
    "task": {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"},
}
TIMELINE_EXAMPLE = [
    {"at": "2026-11-30T14:00:00.000000Z", "version": "1", "by": "Practitioner/coordinator-1", "from_status": None,
     "to_status": "requested", "business_status": None, "reason": None, "outcome": []},
    {"at": "2026-12-01T09:12:00.000000Z", "version": "2", "by": "Organization/harbour",
     "from_status": "requested", "to_status": "accepted", "business_status": None, "reason": None, "outcome": []},
]
MESSAGE_EXAMPLE = {"id": "m1", "sent": "2026-12-01T09:15:00Z", "sender": "Organization/harbour",
                   "recipients": ["Practitioner/coordinator-1"], "text": "Intake booked for Thursday",
                   "resource": {"resourceType": "Communication", "id": "m1", "status": "completed"}}


def errors(*codes: int):
    """Document a view's error responses."""
    return error_responses(blp, *codes)


class NeedSchema(ma.Schema):
    """The coded need the referral is for (a service category or a Gravity SDOH domain)."""

    code = ma.fields.String(required=True, validate=CODE, metadata={"example": "housing"})
    system = text(max_length=500, description="Code system (default: careplan's service categories)",
                  example="https://careplan.example.org/fhir/CodeSystem/service-category")
    display = text(max_length=200, description="Display text", example="Housing")


class ReferralCreateSchema(ma.Schema):
    """A new referral from a care plan activity."""

    care_plan = ma.fields.String(required=True, validate=ID, metadata={"description": "CarePlan id",
                                                                       "example": "cp1"})
    activity = ma.fields.String(required=True, validate=ID, metadata={"description": "The activity's id in the plan",
                                                                      "example": "a1"})
    partner = ma.fields.String(required=True, validate=ORGANIZATION, metadata={
        "description": "The partner agency (must offer a service for the need in the directory)",
        "example": "Organization/harbour"})
    service = ma.fields.String(validate=ID, metadata={
        "description": "The partner's HealthcareService id, to choose one service of several",
        "example": "harbour-housing"})
    need = ma.fields.Nested(NeedSchema, required=True)
    reason = text(required=True, max_length=2000, description="Why the patient is referred",
                  example="Sleeping rough since October")
    priority = ma.fields.String(load_default="routine", validate=ma.validate.OneOf(referrals.PRIORITIES),
                                metadata={"example": "urgent"})
    language = text(max_length=35, description="Language the service must work in (default: the patient's "
                                               "preferred language, when recorded)", example="fr")
    consent = ma.fields.String(validate=CONSENT, metadata={"description": "The Consent that permits the disclosure",
                                                           "example": "Consent/c1"})
    note = text(max_length=4000, description="A note for the partner", example="Prefers calls after 5 pm")


class ReferralListArgs(PageArgs):
    """Filters of the referral list."""

    patient = ma.fields.String(validate=PATIENT, metadata={"example": "Patient/f3a9c2"})
    status = ma.fields.String(validate=ma.validate.OneOf(referrals.TASK_STATUSES),
                              metadata={"description": "One Task status (default: every open status)",
                                        "example": "requested"})
    partner = ma.fields.String(validate=ORGANIZATION, metadata={"example": "Organization/harbour"})
    overdue = ma.fields.Boolean(metadata={"description": "Only referrals past (true) or within (false) their "
                                                         "service levels", "example": True})


class ReasonSchema(ma.Schema):
    """Why."""

    reason = text(required=True, max_length=2000, description="Why", example="The client moved out of the area")


class ReReferSchema(ma.Schema):
    """Where to refer again."""

    partner = ma.fields.String(required=True, validate=ORGANIZATION, metadata={"example": "Organization/lakeside"})
    service = ma.fields.String(validate=ID, metadata={"example": "lakeside-housing"})
    reason = text(max_length=2000, description="Why (default: the original reason)", example="Harbour is full")
    language = text(max_length=35, description="Language the service must work in", example="fr")
    priority = ma.fields.String(validate=ma.validate.OneOf(referrals.PRIORITIES), metadata={"example": "urgent"})
    consent = ma.fields.String(validate=CONSENT, metadata={"description": "The Consent that permits disclosure to "
                                                                          "the new partner",
                                                           "example": "Consent/c2"})
    note = text(max_length=4000, description="A note for the new partner")


class MessageCreateSchema(ma.Schema):
    """A message about a referral."""

    text = text(required=True, max_length=4000, description="The message", example="Can you see her this week?")


class SlaSchema(ma.Schema):
    """Service levels: when the partner must respond and make first contact, and whether it is late."""

    response_due = ma.fields.String(allow_none=True)
    response_overdue = ma.fields.Boolean(required=True)
    contact_due = ma.fields.String(allow_none=True)
    contact_overdue = ma.fields.Boolean(required=True)


class CodeViewSchema(ma.Schema):
    """A code."""

    system = ma.fields.String(allow_none=True)
    code = ma.fields.String(allow_none=True)
    display = ma.fields.String(allow_none=True)


class PatientMinimumSchema(ma.Schema):
    """What a partner may see of the patient."""

    id = ma.fields.String(required=True)
    name = ma.fields.String(allow_none=True)
    telecom = ma.fields.List(ma.fields.Dict())
    preferred_language = ma.fields.String(allow_none=True)


class ReferralSchema(ma.Schema):
    """A referral: the Task and what it is about, with its age and service levels."""

    id = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    business_status = ma.fields.String(allow_none=True)
    priority = ma.fields.String(allow_none=True)
    patient = ma.fields.String(allow_none=True)
    partner = ma.fields.String(allow_none=True)
    requester = ma.fields.String(allow_none=True)
    care_plan = ma.fields.String(allow_none=True)
    activity = ma.fields.String(allow_none=True)
    service_request = ma.fields.String(allow_none=True)
    need = ma.fields.Nested(CodeViewSchema, allow_none=True)
    reason = ma.fields.String(allow_none=True)
    authored_on = ma.fields.String(allow_none=True)
    last_updated = ma.fields.String(allow_none=True)
    age_days = ma.fields.Integer(required=True)
    sla = ma.fields.Nested(SlaSchema, required=True)
    overdue = ma.fields.Boolean(required=True)
    not_updated = ma.fields.Boolean(metadata={"description": "Partner inbox: no update within the response SLA"})
    patient_details = ma.fields.Nested(PatientMinimumSchema, allow_none=True,
                                       metadata={"description": "Partner side: the minimum the consent allows"})
    replaces = ma.fields.String(allow_none=True)
    task = ma.fields.Dict(required=True, metadata={"description": "The FHIR Task as stored"})


class TimelineEntrySchema(ma.Schema):
    """One change of a referral's status or partner sub-state."""

    at = ma.fields.String(allow_none=True)
    version = ma.fields.String(allow_none=True)
    by = ma.fields.String(allow_none=True)
    from_status = ma.fields.String(allow_none=True)
    to_status = ma.fields.String(allow_none=True)
    business_status = ma.fields.String(allow_none=True)
    reason = ma.fields.Dict(allow_none=True)
    outcome = ma.fields.List(ma.fields.Dict())


class ReferralDetailSchema(ReferralSchema):
    """A referral with its ServiceRequest and its readable timeline."""

    service_request_resource = ma.fields.Dict(allow_none=True, metadata={"description": "The FHIR ServiceRequest"})
    timeline = ma.fields.List(ma.fields.Nested(TimelineEntrySchema))


class ReferralPageSchema(ma.Schema):
    """A page of referrals."""

    items = ma.fields.List(ma.fields.Nested(ReferralSchema), required=True)
    next = ma.fields.String(allow_none=True, metadata={"description": "URL of the next page; null on the last"})


class MessageSchema(ma.Schema):
    """A message about a referral (a FHIR Communication)."""

    id = ma.fields.String(required=True)
    sent = ma.fields.String(allow_none=True)
    sender = ma.fields.String(allow_none=True)
    recipients = ma.fields.List(ma.fields.String())
    text = ma.fields.String(allow_none=True)
    resource = ma.fields.Dict(required=True)


class MessageListSchema(ma.Schema):
    """The messages about a referral, oldest first."""

    items = ma.fields.List(ma.fields.Nested(MessageSchema), required=True)


@blp.route("")
class Referrals(MethodView):
    @blp.arguments(ReferralListArgs, location="query")
    @blp.response(200, ReferralPageSchema, example={"items": [REFERRAL_EXAMPLE], "next": None})
    @errors(400, 401, 403, 422)
    def get(self, args):
        """List referrals (default: the open ones) with their age and service-level flags

        Oldest first. Filter by patient, status, partner, and whether they are overdue (no response within the
        response service level, or no first contact within the contact service level, in business days).
        """
        items, cursor = referrals.list_referrals(
            get_db(), settings=get_settings(), patient=args.get("patient"),
            statuses=[args["status"]] if args.get("status") else None, partner=args.get("partner"),
            overdue=args.get("overdue"), limit=args["limit"], cursor=args.get("cursor"))
        return {"items": items, "next": next_link(cursor)}

    @blp.arguments(ReferralCreateSchema, example={
        "care_plan": "cp1", "activity": "a1", "partner": "Organization/harbour",
        "need": {"code": "housing"}, "reason": "Sleeping rough since October", "priority": "urgent",
        "consent": "Consent/c1", "note": "Prefers calls after 5 pm"})
    @blp.response(201, ReferralDetailSchema, example={**REFERRAL_EXAMPLE, "timeline": TIMELINE_EXAMPLE[:1],
                                                      "service_request_resource": {"resourceType": "ServiceRequest",
                                                                                   "id": "sr1"}})
    @errors()
    def post(self, data):
        """Refer the patient of a care plan activity to a partner agency

        Stores a ServiceRequest (the need, reason, priority, consent) and a Task (requested, owned by the partner,
        based on the care plan, with the activity id) and links the activity to the request, in one transaction.
        The partner must offer a service for the need (and the language) in the directory. Without an active
        Consent that permits disclosure to the partner the referral is refused (422), unless a coordinator breaks
        the glass (X-Careplan-Purpose-Of-Use: BTG with a reason), which is audited.
        """
        made = referrals.refer(
            get_db(), care_plan_id=data["care_plan"], activity_id=data["activity"], partner=data["partner"],
            need=data["need"], reason=data["reason"], priority=data["priority"], service_id=data.get("service"),
            language=data.get("language"), consent=data.get("consent"), note=data.get("note"),
            settings=get_settings())
        return made


@blp.route("/<string:task_id>")
class ReferralById(MethodView):
    @blp.response(200, ReferralDetailSchema, example={**REFERRAL_EXAMPLE, "timeline": TIMELINE_EXAMPLE,
                                                      "service_request_resource": {"resourceType": "ServiceRequest",
                                                                                   "id": "sr1"}})
    @errors(400, 401, 403, 404)
    def get(self, task_id):
        """Read a referral with its readable timeline (every status change: when, who, from, to, why)"""
        return referrals.get_referral(get_db(), task_id=task_id, settings=get_settings())


@blp.route("/<string:task_id>/cancel")
class ReferralCancel(MethodView):
    @blp.arguments(ReasonSchema, example={"reason": "The client moved out of the area"})
    @blp.response(200, ReferralSchema, example={**REFERRAL_EXAMPLE, "status": "cancelled"})
    @errors()
    def post(self, data, task_id):
        """Cancel a referral with a reason (its ServiceRequest is revoked)"""
        return referrals.cancel(get_db(), task_id=task_id, reason=data["reason"], settings=get_settings())


@blp.route("/<string:task_id>/re-refer")
class ReferralReRefer(MethodView):
    @blp.arguments(ReReferSchema, example={"partner": "Organization/lakeside", "reason": "Harbour is full"})
    @blp.response(201, ReferralSchema, example={**REFERRAL_EXAMPLE, "partner": "Organization/lakeside",
                                                "replaces": "Task/t0"})
    @errors()
    def post(self, data, task_id):
        """Refer again to another partner after a decline, failure or cancellation

        A new ServiceRequest replaces the old one (which is revoked), a new Task goes to the new partner, and the
        care plan activity links the new request.
        """
        return referrals.re_refer(get_db(), task_id=task_id, partner=data["partner"], reason=data.get("reason"),
                                  service_id=data.get("service"), language=data.get("language"),
                                  priority=data.get("priority"), consent=data.get("consent"), note=data.get("note"),
                                  settings=get_settings())


@blp.route("/<string:task_id>/messages")
class ReferralMessages(MethodView):
    @blp.response(200, MessageListSchema, example={"items": [MESSAGE_EXAMPLE]})
    @errors(400, 401, 403, 404)
    def get(self, task_id):
        """List the messages about a referral, oldest first"""
        return {"items": referrals.list_messages(get_db(), task_id=task_id)}

    @blp.arguments(MessageCreateSchema, example={"text": "Can you see her this week?"})
    @blp.response(201, MessageSchema, example={**MESSAGE_EXAMPLE, "sender": "Practitioner/coordinator-1",
                                               "recipients": ["Organization/harbour"]})
    @errors()
    def post(self, data, task_id):
        """Send a message about a referral to the partner"""
        return referrals.send_message(get_db(), task_id=task_id, text=data["text"])
