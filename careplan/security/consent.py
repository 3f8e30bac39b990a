"""Decide whether a patient's privacy Consents let an actor see a resource.

https://hl7.org/fhir/R4/consent.html (scope patient-privacy). A provision applies when every condition it states
(actor, class, securityLabel, purpose, period) matches the request; a matching nested provision overrides its
parent, and among matches deny wins. Ontario's PHIPA model is the default: within the circle of care consent is
implied (anything not denied is permitted); disclosure outside it (a partner agency) needs an express permit, and a
sensitive record (restricted, or labelled mental-health or substance-use) needs a permit that names its label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from careplan.search.dates import parse_range
from careplan.security.labels import Labels

PRIVACY_SCOPE = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")
RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"


@dataclass(frozen=True)
class Request:
    """What is asked: who (their references), which resource type and labels, when, and for what purpose."""

    actor_references: frozenset[str]
    resource_type: str
    labels: Labels
    when: datetime
    purpose: str | None = None


@dataclass(frozen=True)
class Decision:
    """The answer, with the Consents that decided it (for the audit trail)."""

    permitted: bool
    reason: str
    consent_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Match:
    type: str
    names_label: bool  # the permit (or an ancestor) named one of the resource's security labels


def decide(consents: Iterable[dict], request: Request, *, express_consent_required: bool) -> Decision:
    """Decide from the patient's Consents whether the request may see the resource."""
    permits, denies = [], []
    for consent in consents:
        if not _in_force(consent, request.when):
            continue
        match = _evaluate(consent.get("provision") or {}, request, names_label=False)
        if match is None:
            continue
        (denies if match.type == "deny" else permits).append((consent.get("id", "?"), match))
    if denies:
        return Decision(False, "a consent directive denies this disclosure", tuple(i for i, _ in denies))
    if not express_consent_required:
        return Decision(True, "implied consent within the circle of care", tuple(i for i, _ in permits))
    if request.labels.sensitive:
        specific = [i for i, m in permits if m.names_label]
        if specific:
            return Decision(True, "express consent covers this sensitive information", tuple(specific))
        return Decision(False, "sensitive information needs a consent that names its security label")
    if permits:
        return Decision(True, "express consent permits this disclosure", tuple(i for i, _ in permits))
    return Decision(False, "no consent permits disclosure to this recipient")


def _in_force(consent: dict, when: datetime) -> bool:
    if consent.get("resourceType") != "Consent" or consent.get("status") != "active":
        return False
    scope = consent.get("scope") or {}
    if not any((c.get("system"), c.get("code")) == PRIVACY_SCOPE for c in scope.get("coding", ())):
        return False
    return _within((consent.get("provision") or {}).get("period"), when)


def _evaluate(provision: dict, request: Request, *, names_label: bool) -> _Match | None:
    if not _applies(provision, request):
        return None
    names_label = names_label or bool(provision.get("securityLabel"))
    own = _Match(provision["type"], names_label) if provision.get("type") in ("permit", "deny") else None
    children = [m for m in (_evaluate(p, request, names_label=names_label) for p in provision.get("provision", ()))
                if m is not None]
    if children:
        denied = [m for m in children if m.type == "deny"]
        return denied[0] if denied else children[0]
    return own


def _applies(provision: dict, request: Request) -> bool:
    actors = provision.get("actor") or []
    if actors and not any((a.get("reference") or {}).get("reference") in request.actor_references for a in actors):
        return False
    classes = provision.get("class") or []
    if classes and not any(c.get("code") == request.resource_type and c.get("system", RESOURCE_TYPES_SYSTEM)
                           == RESOURCE_TYPES_SYSTEM for c in classes):
        return False
    labels = provision.get("securityLabel") or []
    if labels and not any(c.get("code") in request.labels.codes() for c in labels):
        return False
    purposes = provision.get("purpose") or []
    if purposes and request.purpose not in {p.get("code") for p in purposes}:
        return False
    return _within(provision.get("period"), request.when)


def _within(period: dict | None, when: datetime) -> bool:
    if not period:
        return True
    try:
        if period.get("start") and when < parse_range(period["start"])[0]:
            return False
        if period.get("end") and when > parse_range(period["end"])[1]:
            return False
    except ValueError:
        return False  # an unreadable period cannot be shown to cover the request
    return True
