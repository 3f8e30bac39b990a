"""Coordinated care plans: create from practices, change status, and keep activities, goals, team and concerns."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import reference, require_coordination_role, text
from api.v1.common import error_responses
from careplan.coordination import care_plans, codes

URL_PREFIX = ""
blp = Blueprint("v1_care_plans", __name__, description="Coordinated care plans, goals, care teams, health concerns")
blp.before_request(require_coordination_role)


def errors(*codes: int):
    """Document a view's error responses."""
    return error_responses(blp, *codes)

ACTIVITY_STATUSES = ("not-started", "scheduled", "in-progress", "on-hold", "completed", "cancelled", "stopped")
GOAL_LIFECYCLE = ("proposed", "planned", "accepted", "active", "on-hold", "completed", "cancelled", "rejected")
GOAL_ACHIEVEMENT = ("in-progress", "improving", "worsening", "no-change", "achieved", "sustaining", "not-achieved",
                    "no-progress", "not-attainable")
PLAN_EXAMPLE = {"id": "cp1", "status": "active", "title": "Stable housing and recovery", "patient": "Patient/f3a9c2",
                "version": "1", "resource": {"resourceType": "CarePlan", "id": "cp1", "status": "active",
                                             "intent": "plan", "subject": {"reference": "Patient/f3a9c2"}}}


class PracticeChoiceSchema(ma.Schema):
    """An activity drawn from a catalogue practice."""

    practice = text(required=True, max_length=500, description="Practice id or canonical url (PlanDefinition)",
                    example="https://careplan.example.org/fhir/PlanDefinition/peer-support")
    performer = reference(description="Responsible team member or partner (default: the coordinator)",
                          example="Organization/harbour-shelter")
    cadence_days = ma.fields.Integer(validate=ma.validate.Range(min=1, max=365),
                                     metadata={"description": "Follow-up every N days (default: the practice's)",
                                               "example": 14})
    description = text(max_length=2000, description="What will be done (default: the practice's title)")


class MemberSchema(ma.Schema):
    """A care-team member and their role."""

    role = ma.fields.String(required=True, validate=ma.validate.OneOf(codes.CARE_TEAM_ROLES),
                            metadata={"example": "trusted-support-person"})
    member = reference(required=True, description="Who", example="RelatedPerson/sister")
    display = text(max_length=200, description="Name to show", example="Marie (sister)")


class GoalSchema(ma.Schema):
    """A goal of the patient, in their words."""

    description = text(required=True, max_length=2000, description="The goal in the patient's words",
                       example="Have my own place by spring")
    target_date = ma.fields.Date(metadata={"description": "When to review it", "example": "2027-03-01"})
    expressed_by = reference(description="Who expressed it (default: the patient)", example="Patient/f3a9c2")
    lifecycle_status = ma.fields.String(validate=ma.validate.OneOf(GOAL_LIFECYCLE), metadata={"example": "active"})
    achievement_status = ma.fields.String(validate=ma.validate.OneOf(GOAL_ACHIEVEMENT),
                                          metadata={"example": "in-progress"})


class GoalUpdateSchema(ma.Schema):
    """Changes to a goal."""

    description = text(max_length=2000, description="The goal in the patient's words")
    target_date = ma.fields.Date(metadata={"example": "2027-04-01"})
    lifecycle_status = ma.fields.String(validate=ma.validate.OneOf(GOAL_LIFECYCLE), metadata={"example": "active"})
    achievement_status = ma.fields.String(validate=ma.validate.OneOf(GOAL_ACHIEVEMENT),
                                          metadata={"example": "improving"})


class ConcernSchema(ma.Schema):
    """A health concern or social need the plan addresses."""

    description = text(required=True, max_length=2000, description="The concern", example="No stable housing")
    social_need = text(max_length=64, description="Gravity SDOH domain code, when it is a social need",
                       example="housing-instability")


class CarePlanCreateSchema(ma.Schema):
    """A new coordinated care plan."""

    title = text(required=True, max_length=200, description="Title", example="Stable housing and recovery")
    description = text(max_length=4000, description="Summary of the plan")
    status = ma.fields.String(load_default="draft", validate=ma.validate.OneOf(("draft", "active")),
                              metadata={"example": "active"})
    period_start = ma.fields.Date(metadata={"example": "2026-11-22"})
    practices = ma.fields.List(ma.fields.Nested(PracticeChoiceSchema), required=True,
                               validate=ma.validate.Length(max=50))
    team = ma.fields.List(ma.fields.Nested(MemberSchema), validate=ma.validate.Length(max=50))
    goals = ma.fields.List(ma.fields.Nested(GoalSchema), validate=ma.validate.Length(max=50))
    concerns = ma.fields.List(ma.fields.Nested(ConcernSchema), validate=ma.validate.Length(max=50),
                              metadata={"description": "The health concerns and social needs the plan addresses "
                                                       "(required for an active plan; a draft may add them later)"})

    @ma.validates_schema
    def _active_needs_concerns(self, data, **kwargs):
        # The profile holds a plan in use to name what it addresses; a draft is still being built with the patient.
        if data.get("status") == "active" and not data.get("concerns"):
            raise ma.ValidationError("An active plan must name the concerns it addresses", "concerns")


class StatusSchema(ma.Schema):
    """The status to move a plan to."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(tuple(care_plans.TRANSITIONS)),
                              metadata={"example": "on-hold"})


class ActivityUpdateSchema(ma.Schema):
    """Changes to an activity, or a progress note."""

    status = ma.fields.String(validate=ma.validate.OneOf(ACTIVITY_STATUSES), metadata={"example": "in-progress"})
    progress_note = text(max_length=4000, description="A progress note; it also resets the follow-up clock",
                         example="Met at the drop-in; housing application sent")
    performer = reference(description="Responsible team member or partner", example="Practitioner/peer-1")
    cadence_days = ma.fields.Integer(validate=ma.validate.Range(min=1, max=365), metadata={"example": 7})


class CarePlanSchema(ma.Schema):
    """A coordinated care plan, with the stored FHIR CarePlan."""

    id = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    title = ma.fields.String(allow_none=True)
    patient = ma.fields.String(allow_none=True)
    version = ma.fields.String(allow_none=True)
    resource = ma.fields.Dict(required=True, metadata={"description": "The FHIR CarePlan as stored"})


class CarePlanListSchema(ma.Schema):
    """A patient's coordinated care plans."""

    items = ma.fields.List(ma.fields.Nested(CarePlanSchema), required=True)


class ResourceSchema(ma.Schema):
    """A stored FHIR resource."""

    id = ma.fields.String(required=True)
    resource = ma.fields.Dict(required=True)


class MemberQuerySchema(ma.Schema):
    """Which role of the member to remove (all of theirs when absent)."""

    role = ma.fields.String(validate=ma.validate.OneOf(codes.CARE_TEAM_ROLES))


def plan_view(plan: dict) -> dict:
    """Return the API view of a CarePlan."""
    return {"id": plan["id"], "status": plan["status"], "title": plan.get("title"),
            "patient": (plan.get("subject") or {}).get("reference"),
            "version": (plan.get("meta") or {}).get("versionId"), "resource": plan}


def resource_view(resource: dict) -> dict:
    """Return the API view of another stored resource."""
    return {"id": resource["id"], "resource": resource}




@blp.route("/patients/<string:patient_id>/care-plans")
class PatientCarePlans(MethodView):
    @blp.response(200, CarePlanListSchema, example={"items": [PLAN_EXAMPLE]})
    @errors()
    def get(self, patient_id):
        """List a patient's coordinated care plans (made here or posted on /fhir)"""
        return {"items": [plan_view(p) for p in care_plans.find(get_db(), patient_id=patient_id)]}

    @blp.arguments(CarePlanCreateSchema, example={
        "title": "Stable housing and recovery", "status": "active",
        "practices": [{"practice": "peer-support", "cadence_days": 14},
                      {"practice": "https://careplan.example.org/fhir/PlanDefinition/housing-first",
                       "performer": "Organization/harbour-shelter"}],
        "team": [{"role": "trusted-support-person", "member": "RelatedPerson/sister", "display": "Marie"}],
        "goals": [{"description": "Have my own place by spring", "target_date": "2027-03-01"}],
        "concerns": [{"description": "No stable housing", "social_need": "housing-instability"}]})
    @blp.response(201, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors(400, 401, 403, 404, 422)
    def post(self, data, patient_id):
        """Create a coordinated care plan from chosen practices

        Each practice becomes an activity citing it (instantiatesCanonical) with its default follow-up cadence;
        the care team (patient and coordinator added when missing), goals and concerns are stored with it.
        A patient has at most one active coordinated care plan (422 otherwise, as on /fhir).
        """
        plan = care_plans.create(
            get_db(), patient_id=patient_id, title=data["title"], status=data["status"],
            description=data.get("description"), period_start=data.get("period_start"),
            practices_chosen=data["practices"], team=data.get("team"), goals=data.get("goals"),
            concerns=data.get("concerns"))
        return plan_view(plan)


@blp.route("/care-plans/<string:care_plan_id>")
class CarePlanById(MethodView):
    @blp.response(200, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors()
    def get(self, care_plan_id):
        """Read a coordinated care plan"""
        return plan_view(care_plans.get(get_db(), care_plan_id=care_plan_id))


@blp.route("/care-plans/<string:care_plan_id>/status")
class CarePlanStatus(MethodView):
    @blp.arguments(StatusSchema, example={"status": "on-hold"})
    @blp.response(200, CarePlanSchema, example={**PLAN_EXAMPLE, "status": "on-hold"})
    @errors(400, 401, 403, 404, 422)
    def post(self, data, care_plan_id):
        """Change a plan's status (allowed transitions only)

        draft → active | revoked; active → on-hold | completed | revoked; on-hold → active | completed | revoked;
        completed and revoked are final. Any other change answers 422 naming the rule.
        """
        return plan_view(care_plans.change_status(get_db(), care_plan_id=care_plan_id, status=data["status"]))


@blp.route("/care-plans/<string:care_plan_id>/activities")
class Activities(MethodView):
    @blp.arguments(PracticeChoiceSchema, example={"practice": "peer-support", "performer": "Practitioner/peer-1"})
    @blp.response(201, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors()
    def post(self, data, care_plan_id):
        """Add an activity from a catalogue practice"""
        return plan_view(care_plans.add_activity(get_db(), care_plan_id=care_plan_id, choice=data))


@blp.route("/care-plans/<string:care_plan_id>/activities/<string:activity_id>")
class ActivityById(MethodView):
    @blp.arguments(ActivityUpdateSchema, example={"progress_note": "Met at the drop-in", "status": "in-progress"})
    @blp.response(200, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors()
    def patch(self, data, care_plan_id, activity_id):
        """Update an activity or add a progress note"""
        return plan_view(care_plans.update_activity(get_db(), care_plan_id=care_plan_id, activity_id=activity_id,
                                                    **data))

    @blp.response(200, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors()
    def delete(self, care_plan_id, activity_id):
        """Remove an activity (earlier versions of the plan keep it)"""
        return plan_view(care_plans.remove_activity(get_db(), care_plan_id=care_plan_id, activity_id=activity_id))


@blp.route("/care-plans/<string:care_plan_id>/goals")
class Goals(MethodView):
    @blp.arguments(GoalSchema, example={"description": "Have my own place by spring", "target_date": "2027-03-01"})
    @blp.response(201, ResourceSchema, example={"id": "g1", "resource": {"resourceType": "Goal", "id": "g1"}})
    @errors()
    def post(self, data, care_plan_id):
        """Add a goal of the patient to the plan"""
        return resource_view(care_plans.add_goal(get_db(), care_plan_id=care_plan_id, goal=data))


@blp.route("/care-plans/<string:care_plan_id>/goals/<string:goal_id>")
class GoalById(MethodView):
    @blp.arguments(GoalUpdateSchema, example={"achievement_status": "improving"})
    @blp.response(200, ResourceSchema, example={"id": "g1", "resource": {"resourceType": "Goal", "id": "g1"}})
    @errors()
    def patch(self, data, care_plan_id, goal_id):
        """Update a goal: lifecycle or achievement status, target date, wording"""
        return resource_view(care_plans.update_goal(get_db(), care_plan_id=care_plan_id, goal_id=goal_id, **data))

    @blp.response(200, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors()
    def delete(self, care_plan_id, goal_id):
        """Take a goal off the plan (the Goal is kept, cancelled)"""
        return plan_view(care_plans.remove_goal(get_db(), care_plan_id=care_plan_id, goal_id=goal_id))


@blp.route("/care-plans/<string:care_plan_id>/team-members")
class TeamMembers(MethodView):
    @blp.arguments(MemberSchema, example={"role": "partner-agency", "member": "Organization/harbour-shelter"})
    @blp.response(201, ResourceSchema, example={"id": "ct1", "resource": {"resourceType": "CareTeam", "id": "ct1"}})
    @errors()
    def post(self, data, care_plan_id):
        """Add a member to the plan's care team"""
        return resource_view(care_plans.add_member(get_db(), care_plan_id=care_plan_id, member=data))


@blp.route("/care-plans/<string:care_plan_id>/team-members/<string:member_type>/<string:member_id>")
class TeamMemberById(MethodView):
    @blp.arguments(MemberQuerySchema, location="query")
    @blp.response(200, ResourceSchema, example={"id": "ct1", "resource": {"resourceType": "CareTeam", "id": "ct1"}})
    @errors()
    def delete(self, args, care_plan_id, member_type, member_id):
        """Remove a member from the plan's care team (in one role with ?role=, else in all)"""
        return resource_view(care_plans.remove_member(get_db(), care_plan_id=care_plan_id,
                                                      member=f"{member_type}/{member_id}", role=args.get("role")))


@blp.route("/care-plans/<string:care_plan_id>/health-concerns")
class Concerns(MethodView):
    @blp.arguments(ConcernSchema, example={"description": "No stable housing", "social_need": "housing-instability"})
    @blp.response(201, ResourceSchema, example={"id": "c1", "resource": {"resourceType": "Condition", "id": "c1"}})
    @errors()
    def post(self, data, care_plan_id):
        """Record a health concern or social need the plan addresses"""
        return resource_view(care_plans.add_concern(get_db(), care_plan_id=care_plan_id, concern=data))


@blp.route("/care-plans/<string:care_plan_id>/health-concerns/<string:condition_id>")
class ConcernById(MethodView):
    @blp.response(200, CarePlanSchema, example=PLAN_EXAMPLE)
    @errors()
    def delete(self, care_plan_id, condition_id):
        """Stop the plan addressing a concern (the Condition stays in the record)"""
        return plan_view(care_plans.remove_concern(get_db(), care_plan_id=care_plan_id, condition_id=condition_id))
