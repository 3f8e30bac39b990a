"""Turn a referral Task's version history into a readable timeline: when, who, from -> to, reason, outcome.

Every version that changed the status or the businessStatus is one entry. Who made the change is the Task's
status-changed-by extension when the change came through the coordination API; for a change made elsewhere (an EHR
on /fhir) it is inferred from the side that may set the new status: the partner for the partner's statuses, the
requester for draft, requested and entered-in-error, unknown for a cancellation.
"""

from __future__ import annotations

CHANGED_BY_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/status-changed-by"
REQUESTER_STATUSES = frozenset({"draft", "requested", "received", "entered-in-error"})
PARTNER_STATUSES = frozenset({"accepted", "rejected", "ready", "in-progress", "on-hold", "completed", "failed"})


def reference_text(value: dict | None) -> str | None:
    """Return a Reference as text: Type/id, or system|value for a reference by identifier."""
    if not value:
        return None
    if value.get("reference"):
        return value["reference"]
    identifier = value.get("identifier") or {}
    return f"{identifier.get('system')}|{identifier.get('value')}" if identifier.get("value") else None


def _recorded(task: dict | None) -> dict | None:
    return next((e for e in (task or {}).get("extension", []) if e.get("url") == CHANGED_BY_EXTENSION), None)


def changed_by(task: dict, previous: dict | None = None) -> str | None:
    """Return who made this version's change: the actor recorded with it, else the side that sets its status.

    The record counts only when this version wrote it (it differs from the previous version's, as each carries the
    moment of its change): a client that copies the Task back over /fhir copies the old record too.
    """
    recorded = _recorded(task)
    if recorded is not None and recorded != _recorded(previous):
        by = next((e for e in recorded.get("extension", []) if e.get("url") == "by"), {})
        return reference_text(by.get("valueReference"))
    status = task.get("status")
    if status in PARTNER_STATUSES:
        return reference_text(task.get("owner"))
    if status in REQUESTER_STATUSES:
        return reference_text(task.get("requester"))
    return None


def _concept(concept: dict | None) -> dict | None:
    if not concept:
        return None
    coding = (concept.get("coding") or [{}])[0]
    return {"code": coding.get("code"), "system": coding.get("system"),
            "text": concept.get("text") or coding.get("display")}


def business_status(task: dict) -> str | None:
    """Return the Task's businessStatus code (or its text)."""
    concept = task.get("businessStatus") or {}
    coding = (concept.get("coding") or [{}])[0]
    return coding.get("code") or concept.get("text")


def outcome(task: dict) -> list[dict]:
    """Return what the Task's outputs say was done: coded outcomes and resulting references."""
    items = []
    for output in task.get("output", []):
        if "valueCodeableConcept" in output:
            items.append(_concept(output["valueCodeableConcept"]))
        elif "valueReference" in output:
            items.append({"reference": output["valueReference"].get("reference")})
        elif "valueString" in output:
            items.append({"text": output["valueString"]})
    return items


def build(versions: list[dict]) -> list[dict]:
    """Return the timeline of a Task from its versions, oldest first."""
    entries = []
    previous: dict | None = None
    for version in versions:
        status, business = version.get("status"), business_status(version)
        if previous is not None and status == previous.get("status") and business == business_status(previous):
            previous = version
            continue
        entries.append({
            "at": (version.get("meta") or {}).get("lastUpdated"),
            "version": (version.get("meta") or {}).get("versionId"),
            "by": changed_by(version, previous),
            "from_status": previous.get("status") if previous is not None else None,
            "to_status": status,
            "business_status": business,
            "reason": _concept(version.get("statusReason")) if status != (previous or {}).get("status") else None,
            "outcome": outcome(version) if status == "completed" else [],
        })
        previous = version
    return entries
