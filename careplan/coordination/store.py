"""Reads and searches for the coordination services, always through the policy-enforcing store and search layers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from careplan import errors as fhir_errors
from careplan.coordination.errors import NotFound, RuleViolation
from careplan.search import engine
from careplan.search.request import parse_request
from careplan.security import context
from careplan.store import service
from careplan.store.records import StoredResource
from careplan.validation import validate_resource

MAX_LIMIT = 100
MAX_SCAN = 1000  # resources one internal sweep reads (worklist, summary)


@dataclass(frozen=True)
class Page:
    """One page of a listing with the opaque cursor of the next page (None on the last)."""

    items: list[dict]
    next_cursor: str | None


def now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def read(session: Session, resource_type: str, resource_id: str) -> StoredResource:
    """Return the current version of a visible resource or raise the domain NotFound."""
    if not _FHIR_ID.match(resource_id):
        raise NotFound(f"{resource_type}/{resource_id[:64]} is not known")
    try:
        return service.read_in(session, resource_type=resource_type, resource_id=resource_id)
    except (fhir_errors.NotFound, fhir_errors.Gone):
        raise NotFound(f"{resource_type}/{resource_id} is not known") from None


def search(session: Session, resource_type: str, params: list[tuple[str, str]], *, limit: int = MAX_SCAN,
           cursor: str | None = None) -> Page:
    """Run a FHIR search as the current caller and return one page of resources."""
    pairs = [*params, ("_count", str(limit)), ("_total", "none")]
    if cursor:
        pairs.append(("_cursor", cursor))
    request = parse_request(pairs, types=(resource_type,), strict=True, default_count=limit,
                            max_count=max(limit, MAX_SCAN))
    result = engine.search(session, request, visibility=context.visibility(None))
    return Page([record.content for record in result.matches], result.next_cursor)


def search_all(session: Session, resource_type: str, params: list[tuple[str, str]]) -> list[dict]:
    """Return up to MAX_SCAN matches of a search as the current caller."""
    return search(session, resource_type, params).items


_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def caller_reference() -> dict | None:
    """Return a Reference to the calling person or client as a Practitioner (None for trusted system work)."""
    current = context.current()
    if current is None:
        return None
    subject = current.actor.subject
    if _FHIR_ID.match(subject):
        return {"reference": f"Practitioner/{subject}"}
    # An identity provider's subject need not be a valid FHIR id: refer to it by identifier instead.
    return {"identifier": {"system": current.actor.issuer, "value": subject}}


def validate(resource: dict) -> None:
    """Raise RuleViolation unless resource is valid FHIR R4 (what the services build from checked input always is)."""
    try:
        validate_resource(resource, expected_type=resource["resourceType"])
    except fhir_errors.InvalidResource as error:
        raise RuleViolation(f"The {resource['resourceType']} would not be valid FHIR: {error}") from None
