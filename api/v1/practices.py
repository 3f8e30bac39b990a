"""The practice catalogue: list and choose practices in adoption order; administrators change a practice's tier."""

from __future__ import annotations

import base64
import re

import marshmallow as ma
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import PageArgs, error_responses, next_link, require_coordination_role, text
from careplan.coordination.errors import RuleViolation
from careplan.coordination.worklist import period_days
from careplan.practices import catalogue, curation
from careplan.practices.tiers import TIER_ORDER, tier_of

URL_PREFIX = "/practices"
blp = Blueprint("v1_practices", __name__, description="The practice catalogue, in the order recommended, promising, "
                                                      "emerging; tiers are data administrators curate")
blp.before_request(require_coordination_role)

_ETAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})"\s*$')
_CURSOR = re.compile(r"^o:(\d{1,6})$")
PRACTICE_EXAMPLE = {
    "id": "notify-community-providers-of-admission",
    "url": "https://careplan.example.org/fhir/PlanDefinition/notify-community-providers-of-admission",
    "version": "1",
    "canonical": "https://careplan.example.org/fhir/PlanDefinition/notify-community-providers-of-admission|1",
    "version_id": "1", "status": "active",
    "title": "Notify community providers when a patient is admitted",
    "description": "When a patient with a coordinated care plan is admitted, the hospital notifies the patient's "
                   "community providers and care coordinator.",
    "tier": "promising", "tier_source": "HQO-assessed: promising (https://hqontario.ca/...)",
    "reassessment_date": "2017-09", "endorsement": "Provincial spread with reassessment in one year (Sept 2017)",
    "themes": ["social-community-partnerships"], "social_needs": [], "service_categories": [],
    "evidence": [{"display": "HQO Health Links: Early in the hospital admission", "url": "https://hqontario.ca/..."}],
    "follow_up": {"timing": {"repeat": {"frequency": 1, "period": 30, "periodUnit": "d"}}, "every_days": 30.0},
    "resource": {"resourceType": "PlanDefinition", "id": "notify-community-providers-of-admission"},
}


class PracticeArgs(PageArgs):
    """Filters of the practice catalogue."""

    theme = text(max_length=64, description="A practice theme code", example="health-equity-sdoh")
    tier = ma.fields.String(validate=ma.validate.OneOf(TIER_ORDER), metadata={"example": "recommended"})
    need = text(max_length=64, description="A social-need domain code the practice addresses (its topics)",
                example="housing-instability")
    category = text(max_length=64, description="A mental-health or substance-use service category (its topics)",
                    example="peer-support")
    text = text(max_length=200, description="Words in the title, name or description (any case)", example="peer")
    include_retired = ma.fields.Boolean(load_default=False, metadata={
        "description": "Also list retired practices", "example": False})


class EvidenceSchema(ma.Schema):
    """A source the practice cites."""

    display = ma.fields.String(allow_none=True)
    url = ma.fields.String(allow_none=True)


class FollowUpSchema(ma.Schema):
    """The practice's default follow-up cadence."""

    timing = ma.fields.Dict(allow_none=True, metadata={"description": "A FHIR Timing"})
    every_days = ma.fields.Float(allow_none=True, metadata={"description": "Days between follow-ups"})


class PracticeSchema(ma.Schema):
    """A practice of the catalogue (a PlanDefinition)."""

    id = ma.fields.String(required=True)
    url = ma.fields.String(allow_none=True, metadata={"description": "Canonical url activities cite"})
    version = ma.fields.String(allow_none=True, metadata={"description": "The practice's business version"})
    canonical = ma.fields.String(allow_none=True, metadata={"description": "url|version"})
    version_id = ma.fields.String(allow_none=True, metadata={"description": "The stored version (the ETag's)"})
    status = ma.fields.String(allow_none=True)
    title = ma.fields.String(allow_none=True)
    description = ma.fields.String(allow_none=True)
    tier = ma.fields.String(allow_none=True, metadata={"description": "recommended, promising or emerging"})
    tier_source = ma.fields.String(allow_none=True, metadata={"description": "Where the tier comes from"})
    reassessment_date = ma.fields.String(allow_none=True, metadata={"description": "When the tier is reassessed"})
    endorsement = ma.fields.String(allow_none=True)
    themes = ma.fields.List(ma.fields.String())
    social_needs = ma.fields.List(ma.fields.String())
    service_categories = ma.fields.List(ma.fields.String())
    evidence = ma.fields.List(ma.fields.Nested(EvidenceSchema))
    follow_up = ma.fields.Nested(FollowUpSchema)
    resource = ma.fields.Dict(required=True, metadata={"description": "The FHIR PlanDefinition as stored"})


class PracticePageSchema(ma.Schema):
    """A page of practices, recommended first."""

    items = ma.fields.List(ma.fields.Nested(PracticeSchema), required=True)
    next = ma.fields.String(allow_none=True, metadata={"description": "URL of the next page; null on the last"})


class TierChangeSchema(ma.Schema):
    """A new tier for a practice."""

    tier = ma.fields.String(required=True, validate=ma.validate.OneOf(TIER_ORDER), metadata={"example": "recommended"})
    reassessment_date = ma.fields.Date(allow_none=True, metadata={
        "description": "When the tier is next reassessed (null clears it; absent keeps it)", "example": "2027-09-01"})
    tier_source = text(max_length=1000, description="Where the tier comes from (default: set by the programme "
                                                    "through this API, with the date)",
                       example="programme-assessed: recommended after the 2026 outcome review")
    version = ma.fields.Integer(validate=ma.validate.Range(min=1), metadata={
        "description": "The version you read (version_id), when you cannot send If-Match", "example": 1})


def practice_view(practice: dict) -> dict:
    """Return the API view of a practice."""
    cadence = catalogue.follow_up_cadence(practice)
    url, version = practice.get("url"), practice.get("version")
    return {
        "id": practice["id"], "url": url, "version": version,
        "canonical": f"{url}|{version}" if url and version else url,
        "version_id": (practice.get("meta") or {}).get("versionId"), "status": practice.get("status"),
        "title": practice.get("title") or practice.get("name"), "description": practice.get("description"),
        "tier": tier_of(practice), "tier_source": catalogue.tier_provenance_of(practice),
        "reassessment_date": catalogue.reassessment_of(practice), "endorsement": catalogue.endorsement_of(practice),
        "themes": catalogue.themes_of(practice), "social_needs": catalogue.social_needs_of(practice),
        "service_categories": catalogue.service_categories_of(practice), "evidence": catalogue.evidence_of(practice),
        "follow_up": {"timing": cadence, "every_days": period_days(cadence)}, "resource": practice,
    }


def _etag(practice: dict) -> dict:
    return {"ETag": f'W/"{(practice.get("meta") or {}).get("versionId")}"'}


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        match = _CURSOR.match(base64.urlsafe_b64decode(cursor.encode("ascii") + b"==").decode("ascii"))
    except (ValueError, UnicodeError):
        match = None
    if match is None:
        raise RuleViolation("The cursor is not one this API gave", errors={"cursor": ["not a cursor"]},
                            location="query")
    return int(match.group(1))


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode("ascii")).decode("ascii").rstrip("=")


@blp.route("")
class Practices(MethodView):
    @blp.arguments(PracticeArgs, location="query")
    @blp.response(200, PracticePageSchema, example={"items": [PRACTICE_EXAMPLE], "next": None})
    @error_responses(blp, 400, 401, 403, 422)
    def get(self, args):
        """List and choose practices: recommended, then promising, then emerging

        Filters combine (all must hold): theme, tier, social-need domain (`need`) and service category
        (`category`) from the practice's topics, and words of its title or description. Within a tier practices
        come by title.
        """
        chosen = curation.choose(get_db(), theme=args.get("theme"), tier=args.get("tier"), need=args.get("need"),
                                 category=args.get("category"), text=args.get("text"),
                                 include_retired=args["include_retired"])
        start = _offset(args.get("cursor"))
        end = start + args["limit"]
        page = chosen[start:end]
        return {"items": [practice_view(p) for p in page],
                "next": next_link(_cursor(end) if end < len(chosen) else None)}


@blp.route("/<string:practice_id>")
class PracticeById(MethodView):
    @blp.response(200, PracticeSchema, example=PRACTICE_EXAMPLE)
    @error_responses(blp, 400, 401, 403, 404)
    def get(self, practice_id):
        """Read a practice, with its ETag for a later change"""
        practice = curation.get(get_db(), practice_id=practice_id)
        return practice_view(practice), 200, _etag(practice)

    @blp.doc(parameters=[{"in": "header", "name": "If-Match", "required": False,
                          "description": 'The ETag of the version you read, e.g. W/"1" (or send `version`)',
                          "schema": {"type": "string", "example": 'W/"1"'}}])
    @blp.arguments(TierChangeSchema, example={"tier": "recommended", "reassessment_date": "2027-09-01",
                                              "tier_source": "programme-assessed: recommended after review"})
    @blp.response(200, PracticeSchema, example=PRACTICE_EXAMPLE)
    @error_responses(blp, 400, 401, 403, 404, 412, 422, 428)
    def patch(self, data, practice_id):
        """Change a practice's tier and reassessment date (administrators only)

        Send `If-Match` with the ETag you read (or `version` in the body): the change is stored as a new version
        of the PlanDefinition only when nobody changed it since (412 otherwise; 428 without either). Worklists and
        listings follow the new tier at once; the history keeps the old one.
        """
        if_match = data.get("version")
        header = request.headers.get("If-Match")
        if header is not None:
            match = _ETAG.match(header)
            if match is None:
                raise RuleViolation('If-Match must be an ETag like W/"3"', errors={"If-Match": ["not an ETag"]},
                                    location="headers")
            if if_match is not None and int(match.group(1)) != if_match:
                raise RuleViolation("If-Match and version name different versions",
                                    errors={"version": ["differs from If-Match"]})
            if_match = int(match.group(1))
        kwargs = {"reassessment": data["reassessment_date"]} if "reassessment_date" in data else {}
        practice = curation.change_tier(get_db(), practice_id=practice_id, tier=data["tier"], if_match=if_match,
                                        source=data.get("tier_source"), **kwargs)
        return practice_view(practice), 200, _etag(practice)
