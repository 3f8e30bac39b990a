"""Enforce the coordinated care plan profile on every write of a CarePlan that claims it.

https://careplan.example.org/fhir/StructureDefinition/coordinated-care-plan (fhir/catalogue/) documents the rules;
this module applies them inside the write transaction, so /fhir, transaction Bundles, imports and the coordination
API all answer the same errors. A CarePlan is a coordinated care plan when it declares the profile in meta.profile
or carries the coordinated-care-plan category. A plan in use (active, on-hold, completed) must keep the whole
profile; a draft (or a revoked plan) needs only a Patient subject, intent plan and the category.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan.errors import InvalidResource, Issue, UnprocessableEntity
from careplan.models import Resource
from careplan.practices import catalogue
from careplan.search import query as search_query
from careplan.security import context
from careplan.store import repository

PROFILE_URL = "https://careplan.example.org/fhir/StructureDefinition/coordinated-care-plan"
CATEGORY_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/care-plan-category"
CATEGORY_CODE = "coordinated-care-plan"
# A plan in use is held to the whole profile; a draft (or a plan revoked or entered in error) only to what makes it a
# coordinated care plan of a patient, so a coordinator can save one while still building it with the patient.
FULL_PROFILE_STATUSES = frozenset({"active", "on-hold", "completed"})
_PATIENT_REFERENCE = re.compile(r"^(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})$")


def declares_profile(resource: dict) -> bool:
    """Tell whether resource lists the coordinated care plan profile in meta.profile."""
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return isinstance(profiles, list) and any(p.partition("|")[0] == PROFILE_URL for p in profiles
                                              if isinstance(p, str))


def has_category(resource: dict) -> bool:
    """Tell whether resource carries the coordinated-care-plan category."""
    return any(coding.get("system") == CATEGORY_SYSTEM and coding.get("code") == CATEGORY_CODE
               for concept in resource.get("category") or [] if isinstance(concept, dict)
               for coding in concept.get("coding") or [] if isinstance(coding, dict))


def is_coordinated(resource: dict) -> bool:
    """Tell whether resource is a CarePlan that claims to be a coordinated care plan."""
    return resource.get("resourceType") == "CarePlan" and (declares_profile(resource) or has_category(resource))


def patient_of(resource: dict) -> str | None:
    """Return the patient id a CarePlan's subject names, or None when the subject is not a Patient."""
    reference = (resource.get("subject") or {}).get("reference")
    match = _PATIENT_REFERENCE.match(reference) if isinstance(reference, str) else None
    return match.group(1) if match else None


def check(session: Session, resource: dict, *, resource_id: str | None = None) -> None:
    """Raise InvalidResource or UnprocessableEntity unless a coordinated care plan keeps the profile's rules.

    Runs inside the write transaction: it reads the catalogue and the patient's other plans as this transaction
    sees them, and on PostgreSQL holds a per-patient lock so two concurrent writers cannot both make a plan active.
    """
    if not is_coordinated(resource):
        return
    complete = resource.get("status") in FULL_PROFILE_STATUSES
    structural = structure_issues(resource) if complete else draft_issues(resource)
    if structural:
        raise InvalidResource(issues=structural)
    unknown = practice_issues(session, resource, already_planned=_planned_practices(session, resource_id))
    if unknown:
        raise UnprocessableEntity(issues=unknown)
    if resource.get("status") == "active":
        _require_only_active_plan(session, resource, resource_id)


def structure_issues(resource: dict) -> list[Issue]:
    """Return the profile's element rules that resource breaks, each with its FHIRPath expression."""
    issues: list[Issue] = []

    def need(condition: bool, expression: str, message: str, code: str = "required") -> None:
        if not condition:
            issues.append(Issue(code, message, expression))

    need(declares_profile(resource), "CarePlan.meta.profile",
         f"A CarePlan with the coordinated-care-plan category must declare the profile {PROFILE_URL}")
    need(has_category(resource), "CarePlan.category",
         f"A coordinated care plan needs the category {CATEGORY_SYSTEM}|{CATEGORY_CODE}")
    need(patient_of(resource) is not None, "CarePlan.subject", "A coordinated care plan's subject must be a Patient")
    need(resource.get("intent") == "plan", "CarePlan.intent", "A coordinated care plan's intent must be 'plan'",
         code="value")
    need(bool(resource.get("author")), "CarePlan.author",
         "A coordinated care plan needs an author (who built it with the patient)")
    care_teams = resource.get("careTeam") or []
    need(len(care_teams) == 1, "CarePlan.careTeam",
         f"A coordinated care plan needs exactly one care team (it has {len(care_teams)})",
         code="required" if not care_teams else "structure")
    need(bool(resource.get("addresses")), "CarePlan.addresses",
         "A coordinated care plan must name the health concerns and social needs it addresses")
    for index, activity in enumerate(resource.get("activity") or []):
        path = f"CarePlan.activity[{index}]"
        detail = activity.get("detail") if isinstance(activity, dict) else None
        if not isinstance(detail, dict):
            issues.append(Issue("required", "Each activity of a coordinated care plan needs a detail tied to a "
                                            "practice (a reference-only activity is not allowed)", f"{path}.detail"))
            continue
        canonicals = detail.get("instantiatesCanonical") or []
        need(len(canonicals) == 1, f"{path}.detail.instantiatesCanonical",
             "Each activity must name exactly one practice of the catalogue in instantiatesCanonical"
             f" (it names {len(canonicals)})", code="required" if not canonicals else "structure")
        need("scheduledTiming" in detail, f"{path}.detail.scheduledTiming",
             "Each activity needs a follow-up cadence as a Timing (scheduledTiming)")
        need(bool(detail.get("performer")), f"{path}.detail.performer",
             "Each activity needs a responsible care-team member or partner (performer)")
    return issues


def draft_issues(resource: dict) -> list[Issue]:
    """Return the rules a coordinated care plan not yet (or no longer) in use breaks: subject, intent, category."""
    issues: list[Issue] = []
    if not has_category(resource):
        issues.append(Issue("required", "A coordinated care plan needs the category "
                                        f"{CATEGORY_SYSTEM}|{CATEGORY_CODE}", "CarePlan.category"))
    if patient_of(resource) is None:
        issues.append(Issue("required", "A coordinated care plan's subject must be a Patient", "CarePlan.subject"))
    if resource.get("intent") != "plan":
        issues.append(Issue("value", "A coordinated care plan's intent must be 'plan'", "CarePlan.intent"))
    return issues


def practice_issues(session: Session, resource: dict, *, already_planned: frozenset[str] = frozenset()) -> list[Issue]:
    """Return an issue for each activity whose practice is not an active PlanDefinition in the store.

    Practices the plan's current version already names are let through: retiring a practice must not stop a team
    from revising or closing the plans that use it.
    """
    issues = []
    for index, activity in enumerate(resource.get("activity") or []):
        detail = activity.get("detail") if isinstance(activity, dict) else None
        canonicals = (detail.get("instantiatesCanonical") if isinstance(detail, dict) else None) or []
        if len(canonicals) != 1:
            continue  # a draft's activity may not name its practice yet; the full profile requires one
        (canonical,) = canonicals
        if canonical in already_planned:
            continue
        if catalogue.practice_by_url(session, canonical) is None:
            issues.append(Issue("business-rule", f"No active practice in the catalogue has the URL {canonical!r}",
                                f"CarePlan.activity[{index}].detail.instantiatesCanonical"))
    return issues


def _planned_practices(session: Session, resource_id: str | None) -> frozenset[str]:
    if resource_id is None:
        return frozenset()
    row = repository.head(session, "CarePlan", resource_id)
    if row is None or row.deleted or not isinstance(row.content, dict):
        return frozenset()
    return frozenset(canonical for activity in row.content.get("activity") or [] if isinstance(activity, dict)
                     for canonical in (activity.get("detail") or {}).get("instantiatesCanonical") or [])


def _require_only_active_plan(session: Session, resource: dict, resource_id: str | None) -> None:
    from careplan.store import service  # the store calls this module; import lazily to avoid a cycle

    patient = patient_of(resource)
    service.lock_in(session, f"active-plan:Patient/{patient}")
    # By category, not _profile: every stored coordinated plan carries the category, whereas meta.profile may name
    # a version (PROFILE_URL|1.0) that an exact _profile search would miss.
    criteria = search_query.parse([("subject", f"Patient/{patient}"), ("status", "active"),
                                   ("category", f"{CATEGORY_SYSTEM}|{CATEGORY_CODE}")])
    others = [row for row in search_query.matching_rows(session, "CarePlan", criteria, limit=2)
              if row.res_id != resource_id]
    if not others:
        return
    existing = others[0]
    if _visible(session, existing):
        message = (f"Patient/{patient} already has an active coordinated care plan (CarePlan/{existing.res_id}); "
                   "complete, revoke or put it on hold first")
    else:
        message = f"Patient/{patient} already has an active coordinated care plan"
    raise UnprocessableEntity(message, expression="CarePlan.status")


def _visible(session: Session, row: Resource) -> bool:
    # Name the existing plan only to a caller who may see it; its id is not to leak.
    condition = context.visibility("CarePlan")
    return condition is None or session.scalar(select(Resource.pk).where(Resource.pk == row.pk, condition)) is not None
