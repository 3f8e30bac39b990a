"""The partner directory: agencies (Organization) and the services they offer (HealthcareService).

Representation (read from the resources, so an EHR or an admin maintains it on /fhir):
- needs and services: HealthcareService.category and .type codes (the local service categories and the Gravity
  SDOH social-need domains); ``need`` matches a code in either, in any system;
- eligibility: HealthcareService.eligibility (code text and comment);
- languages: HealthcareService.communication codes (BCP 47); ``language`` matches the primary subtag too;
- catchment area: HealthcareService.coverageArea (the Locations' display, name, city or district);
- open for referrals now: the boolean extension ACCEPTING_REFERRALS (absent: not known); a service that is not
  ``active`` accepts none; waitlist: HealthcareService.availabilityExceptions (free text, e.g. "6-week waitlist").
"""

from __future__ import annotations


from careplan.coordination import codes
from careplan.coordination.errors import NotFound
from careplan.coordination.store import Page, escape, filtered_page, read
from careplan.db import Database

ACCEPTING_REFERRALS = f"{codes.BASE}/StructureDefinition/accepting-referrals"


def find(db: Database, *, need: str | None = None, language: str | None = None, area: str | None = None,
         accepting: bool | None = None, organization: str | None = None, limit: int = 20,
         cursor: str | None = None) -> Page:
    """Return a page of partner services matching the need, language, area, referral availability and agency."""
    params = [("_sort", "_id")]  # a stable order, so a cursor's position in a page means the same resource
    if organization:  # the index holds providedBy (`organization`); the rest has no exact search parameter
        params.append(("organization", escape(organization)))

    with db.reading() as session:
        def keep(service: dict) -> dict | None:
            view = _view(session, service)
            return view if _matches(view, need=need, language=language, area=area, accepting=accepting) else None

        return filtered_page(session, "HealthcareService", params, keep, limit=limit, cursor=cursor)


def _codes(concepts: list[dict]) -> list[str]:
    return [c["code"] for concept in concepts for c in concept.get("coding", []) if c.get("code")]


def _texts(concepts: list[dict]) -> list[str]:
    return [t for concept in concepts for t in [concept.get("text")] if t]


def _view(session, service: dict) -> dict:
    organization = None
    provided_by = (service.get("providedBy") or {}).get("reference", "")
    if provided_by.startswith("Organization/"):
        try:
            org = read(session, "Organization", provided_by.split("/", 1)[1]).content
            organization = {"id": org["id"], "name": org.get("name")}
        except NotFound:
            organization = None
    areas = []
    for location in service.get("coverageArea", []):
        if location.get("display"):
            areas.append(location["display"])
        target = location.get("reference", "")
        if target.startswith("Location/"):
            try:
                found = read(session, "Location", target.split("/", 1)[1]).content
            except NotFound:
                continue
            address = found.get("address") or {}
            areas += [v for v in (found.get("name"), address.get("city"), address.get("district")) if v]
    accepting = next((e.get("valueBoolean") for e in service.get("extension", [])
                      if e.get("url") == ACCEPTING_REFERRALS), None)
    if service.get("active") is False:
        accepting = False
    return {
        "id": service["id"], "name": service.get("name"), "organization": organization,
        "needs": _codes(service.get("category", [])), "services": _codes(service.get("type", []))
        + _texts(service.get("type", [])),
        "eligibility": [t for e in service.get("eligibility", [])
                        for t in ((e.get("code") or {}).get("text"), e.get("comment")) if t],
        "languages": _codes(service.get("communication", [])), "areas": list(dict.fromkeys(areas)),
        "accepting_referrals": accepting, "waitlist": service.get("availabilityExceptions"),
        "resource": service,
    }


def _matches(view: dict, *, need: str | None, language: str | None, area: str | None,
             accepting: bool | None) -> bool:
    if need and need not in view["needs"] and need not in view["services"]:
        return False
    if language:
        wanted = language.lower()
        spoken = {code.lower() for code in view["languages"]}
        if wanted not in spoken and wanted.split("-")[0] not in {c.split("-")[0] for c in spoken}:
            return False
    if area and not any(area.lower() in known.lower() for known in view["areas"]):
        return False
    if accepting is not None and view["accepting_referrals"] is not accepting:
        return False
    return True
