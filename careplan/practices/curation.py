"""Read the practice catalogue for coordinators and let administrators change a practice's tier.

A tier change is a new version of the practice's PlanDefinition written through the store (so it is validated,
audited and kept in the history), guarded by the version the administrator last read: two administrators editing
the same practice cannot overwrite each other without one of them seeing a 412.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from careplan.coordination.errors import CoordinationError, RuleViolation
from careplan.coordination.store import read, validate
from careplan.db import Database
from careplan.errors import Forbidden
from careplan.practices import catalogue
from careplan.practices.tiers import TIER_ORDER, tier_of
from careplan.security import context
from careplan.store import service

KEEP = object()  # an argument the caller did not give: keep what the practice has


class PreconditionRequired(CoordinationError):
    """A change that could overwrite someone else's names no version to check against (RFC 6585)."""

    status = 428


def choose(db: Database, *, theme: str | None = None, tier: str | None = None, need: str | None = None,
           category: str | None = None, text: str | None = None, include_retired: bool = False) -> list[dict]:
    """Return the practices matching the filters, in adoption order (recommended, promising, emerging)."""
    with db.reading() as session:
        return catalogue.choose_practices(session, theme=theme, tier=tier, need=need, category=category, text=text,
                                          include_retired=include_retired)


def get(db: Database, *, practice_id: str) -> dict:
    """Return a practice (its PlanDefinition as stored now)."""
    with db.reading() as session:
        return read(session, "PlanDefinition", practice_id).content


def change_tier(db: Database, *, practice_id: str, tier: str, if_match: int | None,
                reassessment: date | None | object = KEEP, source: str | None = None,
                today: date | None = None) -> dict:
    """Store a new version of a practice with another tier (admins only) and return it.

    if_match: the version the change is based on (412 when the practice has moved on, 428 when not given).
    reassessment: the new reassessment date, None to clear it, KEEP to keep it. source: where the tier comes from
    (default: the programme set it on today's date).
    """
    caller = context.current()
    if caller is not None and caller.caller.role != "admin":
        raise Forbidden("Only administrators change a practice's tier")
    if tier not in TIER_ORDER:
        raise RuleViolation(f"{tier!r} is not a tier", errors={"tier": [f"one of {', '.join(TIER_ORDER)}"]})
    if if_match is None:
        raise PreconditionRequired("Say which version you are changing: send If-Match with the ETag you read "
                                   "(or the version in the body)", errors={"version": ["required"]})
    day = today or datetime.now(timezone.utc).date()

    def work(session):
        current = read(session, "PlanDefinition", practice_id).content
        if source is not None:
            provenance = source
        elif tier_of(current) == tier and catalogue.tier_provenance_of(current):
            provenance = catalogue.tier_provenance_of(current)
        else:
            provenance = f"programme-assessed: {tier}, set through the coordination API on {day.isoformat()}"
        if reassessment is KEEP:
            when = catalogue.reassessment_of(current)
        else:
            when = reassessment.isoformat() if isinstance(reassessment, date) else None
        changed = catalogue.with_tier(current, tier=tier, provenance=provenance, reassessment=when)
        meta = {k: v for k, v in (changed.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
        if meta:  # the store writes the version and time; labels and profiles stay
            changed["meta"] = meta
        validate(changed)
        return service.update_in(session, resource=changed, resource_id=practice_id, if_match=if_match,
                                 method="PATCH").stored.content

    return service.write_retrying(db, work)
