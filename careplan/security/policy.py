"""Who may see which resource: one SQL condition per caller and type, applied below every path into the data.

Roles (issue 4): ``admin`` sees everything; ``coordinator`` and ``ehr`` act within the circle of care (implied
consent: everything not denied by a Consent directive naming them, unless a coordinator breaks the glass);
``partner`` is an agency outside it and sees only the referrals addressed to its organisation, the minimum patient
data needed to act on them, its own messages and the directory, and only what the patient's Consent permits.
``lead`` (a programme lead) sees the directory and the Measures and no patient data at all: measure aggregates are
computed by the trusted system and small cells suppressed, so a lead needs nothing more.
Reads, searches, includes, totals, history and $everything all use ``visible`` so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, false, literal, or_, select, true
from sqlalchemy.orm import aliased

from careplan.models import Resource, SearchReference, SearchToken
from careplan.security.labels import CONFIDENTIALITY_SYSTEM, SENSITIVITY_SYSTEM
from careplan.security.models import ConsentGrant

ROLES = ("admin", "coordinator", "partner", "ehr", "lead")
CIRCLE_OF_CARE = frozenset({"coordinator", "ehr"})
# Definitional and directory data: no patient in it, every authenticated caller may read it.
DIRECTORY_TYPES = frozenset({"Organization", "HealthcareService", "Location", "Practitioner", "PractitionerRole",
                             "PlanDefinition", "ActivityDefinition", "Questionnaire", "CodeSystem", "ValueSet",
                             "StructureDefinition"})
# What of a Patient a partner agency needs to act on a referral: who, how to reach them, in which language.
PARTNER_PATIENT_ELEMENTS = ("resourceType", "id", "meta", "name", "telecom", "address", "communication")
PATIENT_LINKS = ("patient", "subject", "for", "beneficiary")
PARTNER_TYPES = ("Task", "ServiceRequest", "Patient", "Communication")
# What a programme lead may read: definitional data only (a MeasureReport may list patients, so it is not here).
LEAD_TYPES = DIRECTORY_TYPES | {"Measure"}


@dataclass(frozen=True)
class Caller:
    """The authenticated caller as the policy sees it."""

    role: str
    organization: str | None = None  # "Organization/<id>"
    references: frozenset[str] = field(default_factory=frozenset)  # every reference that identifies the caller
    break_glass: bool = False

    @property
    def actor_references(self) -> frozenset[str]:
        return self.references | ({self.organization} if self.organization else frozenset())


def visible(caller: Caller, resource_type: str | None, *, now: datetime, row=Resource) -> ColumnElement[bool]:
    """Return the SQL condition on ``row`` (a Resource alias) under which caller may see it.

    With ``resource_type`` None the condition works for rows of any type (system search, includes, chains).
    """
    if caller.role == "admin":
        return true()
    if resource_type is None:
        return _visible_any(caller, now, row)
    if resource_type in DIRECTORY_TYPES:
        return true()
    if caller.role == "lead":
        return true() if resource_type in LEAD_TYPES else false()
    if resource_type == "AuditEvent":
        return false()  # the audit trail is for admins only
    if caller.role in CIRCLE_OF_CARE:
        if caller.break_glass and caller.role == "coordinator":
            return true()
        return ~_denied(caller, resource_type, now, row)
    if caller.role == "partner" and caller.organization:
        addressed = _addressed_to(caller.organization, resource_type, row)
        if addressed is None:
            return false()
        if resource_type == "Communication":
            return addressed
        return and_(addressed, _permitted(caller, resource_type, now, row), ~_denied(caller, resource_type, now, row))
    return false()


def _visible_any(caller: Caller, now: datetime, row) -> ColumnElement[bool]:
    directory = row.res_type.in_(sorted(DIRECTORY_TYPES))
    if caller.role == "lead":
        return row.res_type.in_(sorted(LEAD_TYPES))
    if caller.role in CIRCLE_OF_CARE:
        if caller.break_glass and caller.role == "coordinator":
            return row.res_type != "AuditEvent"
        return or_(directory, and_(row.res_type != "AuditEvent", ~_denied(caller, row.res_type, now, row)))
    if caller.role == "partner" and caller.organization:
        return or_(directory, *(and_(row.res_type == t, visible(caller, t, now=now, row=row))
                                for t in PARTNER_TYPES))
    return directory


def redact(caller: Caller, resource: dict) -> dict:
    """Return the part of a visible resource the caller may see (partners get a minimal Patient)."""
    if caller.role == "partner" and resource.get("resourceType") == "Patient":
        return {k: v for k, v in resource.items() if k in PARTNER_PATIENT_ELEMENTS}
    return resource


def _reference(param: str, reference: str, row) -> ColumnElement[bool]:
    target_type, _, target_id = reference.partition("/")
    return exists().where(SearchReference.resource_pk == row.pk, SearchReference.param == param,
                          SearchReference.target_type == target_type, SearchReference.target_id == target_id
                          ).correlate_except(SearchReference)


def _addressed_to(organization: str, resource_type: str, row) -> ColumnElement[bool] | None:
    if resource_type == "Task":
        return _reference("owner", organization, row)
    if resource_type == "ServiceRequest":
        task = aliased(Resource)
        focus = aliased(SearchReference)
        as_focus = exists().where(
            task.res_type == "Task", task.deleted.is_(False), _reference("owner", organization, task),
            focus.resource_pk == task.pk, focus.param == "focus", focus.target_type == "ServiceRequest",
            focus.target_id == row.res_id)
        return or_(_reference("performer", organization, row), as_focus)
    if resource_type == "Patient":
        referral = aliased(Resource)
        link = aliased(SearchReference)
        return exists().where(
            referral.deleted.is_(False),
            or_(and_(referral.res_type == "Task", _reference("owner", organization, referral)),
                and_(referral.res_type == "ServiceRequest", _reference("performer", organization, referral))),
            link.resource_pk == referral.pk, link.param.in_(("patient", "for", "subject")),
            link.target_type == "Patient", link.target_id == row.res_id)
    if resource_type == "Communication":
        return or_(_reference("sender", organization, row), _reference("recipient", organization, row))
    return None


def _about_patient(patient_id, resource_type, row) -> ColumnElement[bool]:
    """Return the condition that a resource is about the patient whose id is patient_id.

    resource_type is a type name, or the row's type column when the condition must work for any type.
    """
    linked = patient_id.in_(
        select(SearchReference.target_id).where(SearchReference.resource_pk == row.pk,
                                                SearchReference.param.in_(PATIENT_LINKS),
                                                SearchReference.target_type == "Patient"
                                                ).correlate_except(SearchReference))
    if isinstance(resource_type, str):
        return patient_id == row.res_id if resource_type == "Patient" else linked
    return or_(and_(resource_type == "Patient", patient_id == row.res_id), linked)


def _label_codes(row):
    """Return the security label codes of a resource; unlabelled means normal (N)."""
    codes = select(SearchToken.code).where(SearchToken.resource_pk == row.pk, SearchToken.param == "_security"
                                           ).correlate_except(SearchToken)
    return codes.union(select(literal("N")).where(~_has_confidentiality(row)))


def _has_confidentiality(row) -> ColumnElement[bool]:
    return exists().where(SearchToken.resource_pk == row.pk, SearchToken.param == "_security",
                          SearchToken.system == CONFIDENTIALITY_SYSTEM).correlate_except(SearchToken)


def _sensitive(row) -> ColumnElement[bool]:
    return exists().where(SearchToken.resource_pk == row.pk, SearchToken.param == "_security", or_(
        and_(SearchToken.system == CONFIDENTIALITY_SYSTEM, SearchToken.code.in_(("R", "V"))),
        SearchToken.system == SENSITIVITY_SYSTEM)).correlate_except(SearchToken)


def _grant_matches(grant, caller: Caller, resource_type: str, now: datetime, row) -> ColumnElement[bool]:
    consent = aliased(Resource)
    return and_(
        _about_patient(grant.patient_id, resource_type, row),
        or_(grant.actor.is_(None), grant.actor.in_(sorted(caller.actor_references))),
        or_(grant.resource_class.is_(None), grant.resource_class == resource_type),
        or_(grant.label.is_(None), grant.label.in_(_label_codes(row))),
        grant.start <= now, grant.end >= now,
        exists().where(consent.pk == grant.consent_pk, consent.deleted.is_(False)),
    )


def _denied(caller: Caller, resource_type: str, now: datetime, row) -> ColumnElement[bool]:
    deny, permit = aliased(ConsentGrant), aliased(ConsentGrant)
    # A nested permit inside the deny (same Consent, deeper path) carves an exception out of it.
    overridden = exists().where(
        permit.consent_pk == deny.consent_pk, permit.kind == "permit",
        permit.path.startswith(deny.path + "."),
        _grant_matches(permit, caller, resource_type, now, row))
    return exists().where(deny.kind == "deny", _grant_matches(deny, caller, resource_type, now, row), ~overridden)


def _permitted(caller: Caller, resource_type: str, now: datetime, row) -> ColumnElement[bool]:
    permit = aliased(ConsentGrant)
    specific = or_(~_sensitive(row), permit.label.is_not(None))
    return exists().where(permit.kind == "permit", _grant_matches(permit, caller, resource_type, now, row), specific)
