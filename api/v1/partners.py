"""The partner directory: agencies and their services, searchable by need, language and area."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import PageArgs, error_responses, next_link, require_coordination_role, text
from careplan.coordination import partners

URL_PREFIX = "/partners"
blp = Blueprint("v1_partners", __name__, description="Partner agencies and the services they offer")
blp.before_request(require_coordination_role)

PARTNER_EXAMPLE = {
    "id": "harbour-housing", "name": "Harbour Shelter housing help", "organization": {"id": "harbour", "name":
                                                                                      "Harbour Shelter"},
    "needs": ["housing"], "services": ["Housing first case management"],
    "eligibility": ["Adults 18+ without stable housing"], "languages": ["en", "fr"],
    "areas": ["Ottawa"], "accepting_referrals": True, "waitlist": "About 3 weeks for intake",
    "resource": {"resourceType": "HealthcareService", "id": "harbour-housing"},
}


class PartnerArgs(PageArgs):
    """Filters of the partner directory."""

    need = text(max_length=64, description="A need or service code (category or type, any system)",
                example="housing")
    language = text(max_length=35, description="A language the service works in (BCP 47; `fr` matches `fr-CA`)",
                    example="fr")
    area = text(max_length=200, description="Part of a catchment area's name, city or district", example="Ottawa")
    accepting = ma.fields.Boolean(metadata={"description": "Only services that accept referrals now (true) or "
                                                           "that do not (false)", "example": True})


class OrganizationSchema(ma.Schema):
    """The agency offering a service."""

    id = ma.fields.String(required=True)
    name = ma.fields.String(allow_none=True)


class PartnerSchema(ma.Schema):
    """A partner service."""

    id = ma.fields.String(required=True)
    name = ma.fields.String(allow_none=True)
    organization = ma.fields.Nested(OrganizationSchema, allow_none=True)
    needs = ma.fields.List(ma.fields.String())
    services = ma.fields.List(ma.fields.String())
    eligibility = ma.fields.List(ma.fields.String())
    languages = ma.fields.List(ma.fields.String())
    areas = ma.fields.List(ma.fields.String())
    accepting_referrals = ma.fields.Boolean(allow_none=True, metadata={"description": "null: not known"})
    waitlist = ma.fields.String(allow_none=True)
    resource = ma.fields.Dict(required=True, metadata={"description": "The FHIR HealthcareService"})


class PartnerPageSchema(ma.Schema):
    """A page of partner services."""

    items = ma.fields.List(ma.fields.Nested(PartnerSchema), required=True)
    next = ma.fields.String(allow_none=True, metadata={"description": "URL of the next page; null on the last"})


@blp.route("")
class Partners(MethodView):
    @blp.arguments(PartnerArgs, location="query")
    @blp.response(200, PartnerPageSchema, example={"items": [PARTNER_EXAMPLE], "next": None})
    @error_responses(blp, 400, 401, 403, 422)
    def get(self, args):
        """Find partner services by need, language, area and whether they accept referrals now

        Services are HealthcareService resources (provided by an Organization); whether one accepts referrals
        now is the accepting-referrals extension, its waitlist the availabilityExceptions text.
        """
        page = partners.find(get_db(), need=args.get("need"), language=args.get("language"), area=args.get("area"),
                             accepting=args.get("accepting"), limit=args["limit"], cursor=args.get("cursor"))
        return {"items": page.items, "next": next_link(page.next_cursor)}
