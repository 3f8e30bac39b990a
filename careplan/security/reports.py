"""Reports on the audit trail for privacy officers: every break-glass access, with its justification."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan.models import Resource
from careplan.security.audit import BREAK_GLASS, PURPOSE_SYSTEM


@dataclass(frozen=True)
class BreakGlassAccess:
    """One access made under the break-glass purpose of use."""

    recorded: str
    who: str
    organization: str | None
    action: str
    outcome: str
    patients: tuple[str, ...]
    resources: tuple[str, ...]
    justification: str | None
    audit_event: str


def break_glass(session: Session, *, since: datetime) -> list[BreakGlassAccess]:
    """Return every break-glass access recorded since the given instant, oldest first."""
    rows = session.scalars(select(Resource.content).where(
        Resource.res_type == "AuditEvent", Resource.deleted.is_(False), Resource.last_updated >= since,
    ).order_by(Resource.last_updated))
    found = []
    for event in rows:
        codes = {(c.get("system"), c.get("code")) for p in event.get("purposeOfEvent", ()) for c in p.get("coding", ())}
        if (PURPOSE_SYSTEM, BREAK_GLASS) not in codes:
            continue
        agents = event.get("agent", [])
        who = agents[0].get("who", {}).get("identifier", {}).get("value", "?") if agents else "?"
        organization = next((a["who"].get("reference") for a in agents[1:] if a.get("who", {}).get("reference")), None)
        entities = event.get("entity", [])
        found.append(BreakGlassAccess(
            recorded=event["recorded"], who=who, organization=organization, action=event.get("action", "?"),
            outcome=event.get("outcome", "?"),
            patients=tuple(e["what"]["reference"] for e in entities
                           if e.get("what", {}).get("reference", "").startswith("Patient/")),
            resources=tuple(e["what"]["reference"] for e in entities
                            if e.get("what", {}).get("reference") and not e["what"]["reference"].startswith("Patient/")),
            justification=next((d.get("valueString") for e in entities for d in e.get("detail", ())
                                 if d.get("type") == "justification"), None),
            audit_event=f"AuditEvent/{event['id']}",
        ))
    return found
