"""Patients of coordinated care: enrol, find, read, and the one-call summary."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import PageArgs, next_link, reference, require_coordination_role, text
from api.v1.common import error_responses
from careplan.coordination import patients

URL_PREFIX = "/patients"
blp = Blueprint("v1_patients", __name__, description="Enrol, find and summarise patients")
blp.before_request(require_coordination_role)


def errors(*codes: int):
    """Document a view's error responses."""
    return error_responses(blp, *codes)

PATIENT_EXAMPLE = {
    "id": "f3a9c2", "display_name": "Zoë Tremblay", "birth_date": "1988-04-02", "preferred_language": "fr",
    "identifiers": [{"system": "https://health.example.org/hcn", "value": "1234-567-890"}],
    "resource": {"resourceType": "Patient", "id": "f3a9c2", "name": [{"family": "Tremblay", "given": ["Zoë"]}]},
}


class IdentifierSchema(ma.Schema):
    """A business identifier."""

    system = text(required=True, max_length=500, description="Namespace URI", example="https://health.example.org/hcn")
    value = text(required=True, max_length=200, description="The identifier", example="1234-567-890")


class IdentificationSchema(ma.Schema):
    """Who identified the patient for coordinated care, when and why."""

    identified_by = text(max_length=200, description="Who identified them (person, service or referral source)",
                         example="Emergency department social worker")
    identified_on = ma.fields.Date(metadata={"description": "When (defaults to today)", "example": "2026-11-20"})
    reason = text(max_length=2000, description="Why", example="Three ED visits in 60 days; unstable housing")


class EnrolSchema(ma.Schema):
    """A new patient of coordinated care."""

    family = text(required=True, max_length=200, description="Family name", example="Tremblay")
    given = ma.fields.List(text(max_length=200, description="Given name"), validate=ma.validate.Length(max=5),
                           metadata={"example": ["Zoë"]})
    birth_date = ma.fields.Date(metadata={"description": "Birth date", "example": "1988-04-02"})
    phone = text(max_length=50, description="Phone number", example="+1 613 555 0100")
    email = ma.fields.Email(validate=ma.validate.Length(max=254),
                            metadata={"description": "E-mail address", "example": "zoe@example.org"})
    preferred_language = text(max_length=35, description="Preferred language (BCP 47)", example="fr-CA")
    identifiers = ma.fields.List(ma.fields.Nested(IdentifierSchema), validate=ma.validate.Length(max=10))
    identification = ma.fields.Nested(IdentificationSchema)
    coordinator = reference(description="The coordinator managing the episode (default: the caller)",
                            example="Practitioner/coordinator-1")


class PatientSchema(ma.Schema):
    """A patient, with the stored FHIR Patient."""

    id = ma.fields.String(required=True)
    display_name = ma.fields.String(allow_none=True)
    birth_date = ma.fields.String(allow_none=True)
    preferred_language = ma.fields.String(allow_none=True)
    identifiers = ma.fields.List(ma.fields.Dict())
    resource = ma.fields.Dict(required=True, metadata={"description": "The FHIR Patient as stored"})


class EnrolmentSchema(ma.Schema):
    """The enrolled patient and the EpisodeOfCare that records the identification."""

    patient = ma.fields.Nested(PatientSchema, required=True)
    episode = ma.fields.Dict(required=True, metadata={"description": "The FHIR EpisodeOfCare"})


class FindArgs(PageArgs):
    """Find patients by name and identifier."""

    name = text(max_length=200, description="Part of a name (FHIR `name` search)", example="Tremb")
    identifier = text(max_length=400, description="system|value or value (FHIR `identifier` search)",
                      example="https://health.example.org/hcn|1234-567-890")


class PatientPageSchema(ma.Schema):
    """A page of patients."""

    items = ma.fields.List(ma.fields.Nested(PatientSchema), required=True)
    next = ma.fields.String(allow_none=True, metadata={"description": "URL of the next page; null on the last"})


class RecentSchema(ma.Schema):
    """A resource of the patient's record that changed recently."""

    resource_type = ma.fields.String()
    id = ma.fields.String()
    last_updated = ma.fields.String()


class SummarySchema(ma.Schema):
    """Everything a coordinator needs about a patient in one call."""

    patient = ma.fields.Nested(PatientSchema, required=True)
    episode = ma.fields.Dict(allow_none=True, metadata={"description": "The active coordinated-care EpisodeOfCare"})
    active_plan = ma.fields.Dict(allow_none=True, metadata={"description": "The active coordinated CarePlan"})
    goals = ma.fields.List(ma.fields.Dict(), metadata={"description": "Open Goals"})
    team = ma.fields.Dict(allow_none=True, metadata={"description": "The active plan's CareTeam"})
    open_referrals = ma.fields.List(ma.fields.Dict(), metadata={"description": "Tasks not in a final status"})
    next_follow_ups = ma.fields.List(ma.fields.Dict(), metadata={"description": "Follow-ups by due date"})
    recent_activity = ma.fields.List(ma.fields.Nested(RecentSchema))


def patient_view(resource: dict) -> dict:
    """Return the API view of a FHIR Patient."""
    names = resource.get("name") or [{}]
    name = names[0]
    display = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip() or None
    language = next((c["language"]["coding"][0].get("code") for c in resource.get("communication", [])
                     if c.get("preferred") and c.get("language", {}).get("coding")), None)
    return {"id": resource["id"], "display_name": display, "birth_date": resource.get("birthDate"),
            "preferred_language": language,
            "identifiers": [{"system": i.get("system"), "value": i.get("value")}
                            for i in resource.get("identifier", [])],
            "resource": resource}




@blp.route("")
class Patients(MethodView):
    @blp.arguments(FindArgs, location="query")
    @blp.response(200, PatientPageSchema, example={"items": [PATIENT_EXAMPLE], "next": None})
    @errors()
    def get(self, args):
        """Find patients by name and identifier

        Pages with an opaque cursor: follow `next` until it is null.
        """
        page = patients.find(get_db(), name=args.get("name"), identifier=args.get("identifier"),
                             limit=args["limit"], cursor=args.get("cursor"))
        return {"items": [patient_view(p) for p in page.items], "next": next_link(page.next_cursor)}

    @blp.arguments(EnrolSchema, example={
        "family": "Tremblay", "given": ["Zoë"], "birth_date": "1988-04-02", "preferred_language": "fr-CA",
        "identifiers": [{"system": "https://health.example.org/hcn", "value": "1234-567-890"}],
        "identification": {"identified_by": "Emergency department social worker", "identified_on": "2026-11-20",
                           "reason": "Three ED visits in 60 days; unstable housing"}})
    @blp.response(201, EnrolmentSchema, example={"patient": PATIENT_EXAMPLE, "episode": {
        "resourceType": "EpisodeOfCare", "id": "e1", "status": "active", "patient": {"reference": "Patient/f3a9c2"},
        "period": {"start": "2026-11-20"}}})
    @errors()
    def post(self, data):
        """Enrol a patient in coordinated care

        Stores a Patient and an EpisodeOfCare (status active, type coordinated care, period.start = the date the
        patient was identified, who identified them and why in an extension).
        """
        identification = data.get("identification", {})
        enrolled = patients.enrol(
            get_db(), family=data["family"], given=data.get("given"), birth_date=data.get("birth_date"),
            phone=data.get("phone"), email=data.get("email"), preferred_language=data.get("preferred_language"),
            identifiers=data.get("identifiers"), identified_by=identification.get("identified_by"),
            identified_on=identification.get("identified_on"), reason=identification.get("reason"),
            coordinator=data.get("coordinator"))
        return {"patient": patient_view(enrolled["patient"]), "episode": enrolled["episode"]}


@blp.route("/<string:patient_id>")
class PatientById(MethodView):
    @blp.response(200, PatientSchema, example=PATIENT_EXAMPLE)
    @errors()
    def get(self, patient_id):
        """Read a patient"""
        return patient_view(patients.get(get_db(), patient_id=patient_id))


@blp.route("/<string:patient_id>/summary")
class PatientSummary(MethodView):
    @blp.response(200, SummarySchema, example={
        "patient": PATIENT_EXAMPLE, "episode": None, "active_plan": None, "goals": [], "team": None,
        "open_referrals": [], "next_follow_ups": [], "recent_activity": []})
    @errors()
    def get(self, patient_id):
        """Summarise a patient: active plan, goals, team, open referrals, next follow-ups, recent activity"""
        summary = patients.summarize(get_db(), patient_id=patient_id)
        return {**summary, "patient": patient_view(summary["patient"])}
