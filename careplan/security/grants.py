"""Flatten privacy Consents into grant rows so that search can apply them in SQL, totals included.

Each provision of an active patient-privacy Consent becomes one row per (actor, class, label) combination, carrying
the conditions it inherits from its ancestors. ``path`` records where the provision sits ("0", "0.1", ...) so a
nested permit can override the deny of its ancestor, as careplan.security.consent decides in Python.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from careplan.search.dates import MAX_UTC, parse_range
from careplan.security.consent import PRIVACY_SCOPE, RESOURCE_TYPES_SYSTEM
from careplan.security.models import ConsentGrant

MIN_UTC = datetime.min.replace(tzinfo=MAX_UTC.tzinfo)


@dataclass(frozen=True)
class Grant:
    """One flattened provision condition set."""

    patient_id: str
    kind: str  # permit or deny
    actor: str | None  # "Organization/x"; None: any actor
    resource_class: str | None  # a resource type; None: any
    label: str | None  # a security label code; None: any
    purpose: str | None
    start: datetime
    end: datetime
    path: str


def grants_of(consent: dict) -> list[Grant]:
    """Return the grant rows of a Consent (none unless it is an active patient-privacy consent of a patient)."""
    if consent.get("status") != "active":
        return []
    if not any((c.get("system"), c.get("code")) == PRIVACY_SCOPE for c in (consent.get("scope") or {}).get("coding", ())):
        return []
    patient = (consent.get("patient") or {}).get("reference", "")
    if not patient.startswith("Patient/"):
        return []
    return list(_walk(consent.get("provision") or {}, patient.removeprefix("Patient/"), "0", _Scope()))


@dataclass(frozen=True)
class _Scope:
    kind: str | None = None
    actors: tuple[str | None, ...] = (None,)
    classes: tuple[str | None, ...] = (None,)
    labels: tuple[str | None, ...] = (None,)
    purposes: tuple[str | None, ...] = (None,)
    start: datetime = MIN_UTC
    end: datetime = MAX_UTC


def _walk(provision: dict, patient_id: str, path: str, inherited: _Scope):
    scope = _narrow(provision, inherited)
    if scope is None:
        return
    if scope.kind in ("permit", "deny"):
        for actor, resource_class, label, purpose in itertools.product(scope.actors, scope.classes, scope.labels,
                                                                       scope.purposes):
            yield Grant(patient_id, scope.kind, actor, resource_class, label, purpose, scope.start, scope.end, path)
    for index, child in enumerate(provision.get("provision", ())):
        yield from _walk(child, patient_id, f"{path}.{index}", scope)


def _narrow(provision: dict, scope: _Scope) -> _Scope | None:
    actors = tuple(a["reference"]["reference"] for a in provision.get("actor", ())
                   if (a.get("reference") or {}).get("reference"))
    classes = tuple(c["code"] for c in provision.get("class", ())
                    if c.get("code") and c.get("system", RESOURCE_TYPES_SYSTEM) == RESOURCE_TYPES_SYSTEM)
    labels = tuple(c["code"] for c in provision.get("securityLabel", ()) if c.get("code"))
    purposes = tuple(c["code"] for c in provision.get("purpose", ()) if c.get("code"))
    start, end = scope.start, scope.end
    period = provision.get("period") or {}
    try:
        if period.get("start"):
            start = max(start, parse_range(period["start"])[0])
        if period.get("end"):
            end = min(end, parse_range(period["end"])[1])
    except ValueError:
        return None  # an unreadable period cannot grant or deny anything reliably
    return _Scope(
        kind=provision.get("type", scope.kind),
        actors=_intersect(scope.actors, actors),
        classes=_intersect(scope.classes, classes),
        labels=_intersect(scope.labels, labels),
        purposes=_intersect(scope.purposes, purposes),
        start=start,
        end=end,
    )


def _intersect(inherited: tuple[str | None, ...], own: tuple[str, ...]) -> tuple[str | None, ...]:
    if not own:
        return inherited
    if inherited == (None,):
        return own
    # A child naming actors its parent did not name cannot widen the parent: keep only the common ones.
    return tuple(value for value in own if value in inherited) or ("\x00never",)


def replace(session: Session, *, consent_pk: int, consent: dict | None) -> None:
    """Rewrite the grant rows of one stored Consent (None: it was deleted) in the caller's transaction."""
    session.execute(delete(ConsentGrant).where(ConsentGrant.consent_pk == consent_pk))
    rows = [dict(vars(g), consent_pk=consent_pk) for g in grants_of(consent or {})]
    if rows:
        session.execute(insert(ConsentGrant), rows)
