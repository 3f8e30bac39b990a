"""Apply the access policy, labels, consent grants and the write audit where the store reads and writes rows.

The store calls these on every path (single interactions, transaction and batch entries, imports), so none can
skip them. Without a request context (CLI, scheduler, seeding) reads and writes are the trusted system's; labels
and consent grants are applied all the same.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan.errors import Forbidden, NotFound
from careplan.models import Resource, utcnow
from careplan.security import audit, context, grants, labels, policy

# What a partner agency may write: messages about its referrals, and the outcome of the work (Procedure).
PARTNER_CREATES = frozenset({"Communication", "Procedure"})
PARTNER_UPDATES = frozenset({"Task", "Communication"})
# The practice catalogue (tiers included) and careplan's own terminology and profiles are curated by administrators
# only (issue 5): the same rule on /fhir, in Bundles, imports and the coordination API.
CATALOGUE_TYPES = frozenset({"PlanDefinition", "ActivityDefinition"})
CANONICAL_TYPES = frozenset({"CodeSystem", "ValueSet", "StructureDefinition"})
CANONICAL_BASE = "https://careplan.example.org/fhir/"


def require_visible(session: Session, row: Resource) -> None:
    """Raise NotFound (never Forbidden: existence must not leak) unless the caller may see row."""
    condition = context.visibility(row.res_type)
    if condition is None:
        return
    if session.scalar(select(Resource.pk).where(Resource.pk == row.pk, condition)) is None:
        raise NotFound(f"{row.res_type}/{row.res_id} is not known")


def authorize_create(session: Session, resource: dict) -> None:
    """Raise Forbidden unless the caller may create this resource."""
    current = context.current()
    if current is None:
        return
    _require_curator(current, resource)
    if current.caller.role == "lead":
        raise Forbidden("A programme lead reads measures and may not write")
    if current.caller.role != "partner":
        return
    resource_type = resource["resourceType"]
    if resource_type not in PARTNER_CREATES:
        raise Forbidden(f"A partner agency may not create {resource_type} resources")
    organization = current.caller.organization
    if resource_type == "Communication":
        if (resource.get("sender") or {}).get("reference") != organization:
            raise Forbidden("A partner agency's messages must name its own organization as sender",
                            expression="Communication.sender")
        return
    subject = (resource.get("subject") or {}).get("reference", "")
    if not subject.startswith("Patient/") or not _sees(session, "Patient", subject.removeprefix("Patient/")):
        raise Forbidden("A partner agency may only record outcomes for patients referred to it",
                        expression="Procedure.subject")


def authorize_change(session: Session, row: Resource, new: dict | None = None) -> None:
    """Raise NotFound or Forbidden unless the caller may update row (to new, when known) or delete it."""
    require_visible(session, row)
    current = context.current()
    if current is None:
        return
    for resource in (row.content, new):
        if resource:
            _require_curator(current, resource)
    if current.caller.role == "lead":
        raise Forbidden("A programme lead reads measures and may not write")
    if current.caller.role == "partner" and row.res_type not in PARTNER_UPDATES:
        raise Forbidden(f"A partner agency may not change {row.res_type} resources")


def authorize_delete(session: Session, row: Resource) -> None:
    """Raise NotFound or Forbidden unless the caller may delete row."""
    require_visible(session, row)
    current = context.current()
    if current is None:
        return
    if row.content:
        _require_curator(current, row.content)
    elif row.res_type in CATALOGUE_TYPES:
        _require_curator(current, {"resourceType": row.res_type})
    if current.caller.role == "lead":
        raise Forbidden("A programme lead reads measures and may not write")
    if current.caller.role == "partner":
        raise Forbidden("A partner agency may not delete resources")


def is_catalogue(resource: dict) -> bool:
    """Tell whether resource belongs to the curated catalogue: a practice, or careplan's own terminology/profile."""
    resource_type = resource.get("resourceType")
    if resource_type in CATALOGUE_TYPES:
        return True
    url = resource.get("url")
    return resource_type in CANONICAL_TYPES and isinstance(url, str) and url.startswith(CANONICAL_BASE)


def _require_curator(current: context.RequestContext, resource: dict) -> None:
    if current.caller.role != "admin" and is_catalogue(resource):
        raise Forbidden(f"Only administrators curate the practice catalogue and careplan's own terminology and "
                        f"profiles; a {current.caller.role} may not write this {resource.get('resourceType')}")


def label(resource: dict, previous: dict | None) -> dict:
    """Return resource with the security labels the rules require."""
    return labels.apply(resource, previous=previous)


def after_write(session: Session, row: Resource, method: str) -> None:
    """Keep consent grants current and audit the write in its own transaction."""
    if row.res_type == "Consent":
        grants.replace(session, consent_pk=row.pk, consent=None if row.deleted else row.content)
    current = context.current()
    if current is None or row.res_type == "AuditEvent":
        return
    reference = f"{row.res_type}/{row.res_id}"
    interaction = "create" if row.version_id == 1 else {"PATCH": "patch", "DELETE": "delete"}.get(method, "update")
    patients = context.patients_of(row.content) if row.content else []
    if row.res_type != "Patient" and not patients and row.deleted:
        patients = [p for p in current.patients]  # a deletion keeps no body; the request may have seen whose it was
    event = audit.audit_event(audit.Access(
        interaction=interaction, actor=current.actor, recorded=utcnow(),
        resources=(f"{reference}/_history/{row.version_id}",), patients=tuple(patients),
        purpose_of_use=current.purpose_of_use, break_glass_reason=current.break_glass_reason))
    from careplan.store import repository  # the store calls this module; import lazily to avoid a cycle

    repository.insert(session, event, resource_id=repository.new_id(), now=repository.transaction_time(session),
                      method="POST")
    current.audited_writes.add(reference)


def _sees(session: Session, resource_type: str, resource_id: str) -> bool:
    condition = context.visibility(resource_type)
    query = select(Resource.pk).where(Resource.res_type == resource_type, Resource.res_id == resource_id,
                                      Resource.deleted.is_(False))
    if condition is not None:
        query = query.where(condition)
    return session.scalar(query) is not None


def disclose(resource: dict | None) -> dict | None:
    """Return what of a stored resource may leave the server for the current caller, noting it for the audit."""
    if resource is None:
        return None
    current = context.current()
    if current is None:
        return resource
    shown = policy.redact(current.caller, resource)
    current.saw(shown)
    if labels.labels_of(shown).substance_use:
        current.redisclosure_notice = True
    return shown
