"""Build AuditEvent resources for access to patient data (who, for which organisation, what, whose, when, outcome).

https://hl7.org/fhir/R4/auditevent.html, following the IHE BALP "RESTful activity" pattern: type rest, subtype the
FHIR interaction, one entity for the patient and one for each resource touched; a search records its query.
AuditEvents never hold resource bodies, only references.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

from careplan.store.records import format_instant

ACTION_FOR = {
    "create": "C", "read": "R", "vread": "R", "search": "E", "search-type": "E", "search-system": "E",
    "history": "R", "history-instance": "R", "history-type": "R", "history-system": "R", "update": "U",
    "patch": "U", "delete": "D", "conditional-update": "U", "conditional-delete": "D", "transaction": "E",
    "batch": "E", "everything": "E", "export": "E", "operation": "E",
}
OUTCOME_SUCCESS, OUTCOME_MINOR_FAILURE, OUTCOME_SERIOUS_FAILURE = "0", "4", "8"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
BREAK_GLASS = "BTG"


@dataclass(frozen=True)
class Actor:
    """Who acted: the client or user, their role, and the organisation they act for."""

    subject: str  # client id or OpenID subject
    issuer: str
    role: str
    organization: str | None = None  # "Organization/<id>"
    address: str | None = None  # network address of the caller


@dataclass(frozen=True)
class Access:
    """One audited access to data."""

    interaction: str
    actor: Actor
    recorded: datetime
    outcome: str = OUTCOME_SUCCESS
    outcome_description: str | None = None
    resources: tuple[str, ...] = ()  # "Type/id" (or "Type/id/_history/n") of what was touched
    patients: tuple[str, ...] = ()  # "Patient/id" whose data it was
    query: str | None = None  # the search or history query string
    purpose_of_use: tuple[str, ...] = ("TREAT",)
    break_glass_reason: str | None = None
    extra_entities: tuple[dict, ...] = field(default_factory=tuple)


def audit_event(access: Access) -> dict:
    """Return the AuditEvent resource that records access."""
    purposes = [{"coding": [{"system": PURPOSE_SYSTEM, "code": code}]} for code in access.purpose_of_use]
    agents = [{
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                             "code": "humanuser" if access.actor.role in ("coordinator", "partner") else "dataprocessor"}],
                 "text": access.actor.role},
        "who": {"identifier": {"system": access.actor.issuer, "value": access.actor.subject}},
        "requestor": True,
        **({"purposeOfUse": purposes} if purposes else {}),
        **({"network": {"address": access.actor.address, "type": "2"}} if access.actor.address else {}),
    }]
    if access.actor.organization:
        agents.append({"type": {"text": "on behalf of"}, "who": {"reference": access.actor.organization},
                       "requestor": False})
    entities = [{
        "what": {"reference": patient},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
    } for patient in dict.fromkeys(access.patients)]
    entities.extend({
        "what": {"reference": reference},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"},
    } for reference in dict.fromkeys(access.resources) if reference not in access.patients)
    if access.query:
        entities.append({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
            "query": base64.b64encode(access.query.encode("utf-8")).decode("ascii"),
        })
    if access.break_glass_reason:
        entities.append({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "4"},
                         "description": "break-glass justification",
                         "detail": [{"type": "justification", "valueString": access.break_glass_reason}]})
    entities.extend(access.extra_entities)
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": access.interaction}],
        "action": ACTION_FOR.get(access.interaction, "E"),
        "recorded": format_instant(access.recorded),
        "outcome": access.outcome,
        "purposeOfEvent": purposes,
        "agent": agents,
        "source": {"observer": {"display": "careplan"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
    }
    if access.outcome_description:
        event["outcomeDesc"] = access.outcome_description
    if not purposes:
        del event["purposeOfEvent"]
    if entities:
        event["entity"] = entities
    return event
