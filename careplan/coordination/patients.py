"""Enrol, find and summarise the patients of coordinated care.

An enrolment is a Patient plus an EpisodeOfCare (status active, type coordinated care, period.start the date the
patient was identified, careManager the coordinator, and who identified them and why in the
coordinated-care-identification extension), so "identified for coordinated care" is a plain FHIR search.
"""

from __future__ import annotations

from datetime import date, timedelta

from careplan.coordination import care_plans, codes, worklist
from careplan.coordination.store import Page, caller_reference, now, read, search, search_all, validate
from careplan.db import Database
from careplan.store import service

FINAL_TASK_STATUSES = frozenset({"completed", "cancelled", "rejected", "failed", "entered-in-error"})


def enrol(db: Database, *, family: str, given: list[str] | None = None, birth_date: date | None = None,
          phone: str | None = None, email: str | None = None, preferred_language: str | None = None,
          identifiers: list[dict] | None = None, identified_by: str | None = None,
          identified_on: date | None = None, reason: str | None = None,
          coordinator: str | None = None) -> dict:
    """Create the Patient and its coordinated-care EpisodeOfCare in one transaction; return both."""
    patient: dict = {"resourceType": "Patient", "active": True, "name": [{"family": family, **(
        {"given": given} if given else {})}]}
    if birth_date:
        patient["birthDate"] = birth_date.isoformat()
    telecom = [{"system": "phone", "value": phone}] if phone else []
    telecom += [{"system": "email", "value": email}] if email else []
    if telecom:
        patient["telecom"] = telecom
    if preferred_language:
        patient["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                              "code": preferred_language}]},
                                     "preferred": True}]
    if identifiers:
        patient["identifier"] = [{"system": i["system"], "value": i["value"]} for i in identifiers]
    identified_on = identified_on or now().date()
    validate(patient)
    with db.writing() as session:
        created = service.create_in(session, resource=patient).stored.content
        episode = _episode(created["id"], identified_by=identified_by, identified_on=identified_on, reason=reason,
                           coordinator=coordinator)
        validate(episode)
        episode = service.create_in(session, resource=episode).stored.content
    return {"patient": created, "episode": episode}


def _episode(patient_id: str, *, identified_by: str | None, identified_on: date, reason: str | None,
             coordinator: str | None) -> dict:
    details: list[dict] = [{"url": "identifiedOn", "valueDate": identified_on.isoformat()}]
    if identified_by:
        details.append({"url": "identifiedBy", "valueString": identified_by})
    if reason:
        details.append({"url": "reason", "valueString": reason})
    episode = {
        "resourceType": "EpisodeOfCare", "status": "active",
        "type": [{"coding": [{"system": codes.EPISODE_TYPE_SYSTEM, "code": codes.EPISODE_TYPE_CODE,
                              "display": "Coordinated care"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "period": {"start": identified_on.isoformat()},
        "extension": [{"url": codes.IDENTIFICATION_EXTENSION, "extension": details}],
    }
    manager = {"reference": coordinator} if coordinator else caller_reference()
    if manager and "reference" in manager:
        episode["careManager"] = manager
    return episode


def find(db: Database, *, name: str | None = None, identifier: str | None = None, limit: int = 20,
         cursor: str | None = None) -> Page:
    """Return a page of visible patients matching name and identifier (FHIR `name` and `identifier` semantics)."""
    params: list[tuple[str, str]] = []
    if name:
        params.append(("name", name))
    if identifier:
        params.append(("identifier", identifier))
    with db.reading() as session:
        return search(session, "Patient", params, limit=limit, cursor=cursor)


def get(db: Database, *, patient_id: str) -> dict:
    """Return a visible Patient."""
    with db.reading() as session:
        return read(session, "Patient", patient_id).content


def summarize(db: Database, *, patient_id: str, recent_days: int = 30) -> dict:
    """Return the one-call summary: active plan, goals, team, open referrals, next follow-ups, recent activity."""
    with db.reading() as session:
        patient = read(session, "Patient", patient_id).content
        subject = f"Patient/{patient_id}"
        plans = search_all(session, "CarePlan", [("subject", subject)])
        active = next((p for p in plans if p.get("status") == "active" and care_plans.is_coordinated(p)), None)
        goals = search_all(session, "Goal", [("subject", subject)])
        team = None
        if active:
            team = care_plans.team_of(session, active)
        tasks = search_all(session, "Task", [("patient", subject)])
        episodes = search_all(session, "EpisodeOfCare", [("patient", subject)])
    follow_ups = worklist.follow_ups_of(active, practices={}) if active else []
    follow_ups.sort(key=lambda item: item["due"])
    since = now() - timedelta(days=recent_days)
    recent = [r for r in [*plans, *goals, *tasks, *episodes]
              if r.get("meta", {}).get("lastUpdated", "") >= since.strftime("%Y-%m-%dT%H:%M:%S")]
    recent.sort(key=lambda r: r["meta"]["lastUpdated"], reverse=True)
    return {
        "patient": patient,
        "episode": next((e for e in episodes if e.get("status") == "active"), None),
        "active_plan": active,
        "goals": [g for g in goals if g.get("lifecycleStatus") in ("proposed", "planned", "accepted", "active",
                                                                  "on-hold")],
        "team": team,
        "open_referrals": [t for t in tasks if t.get("status") not in FINAL_TASK_STATUSES],
        "next_follow_ups": follow_ups[:10],
        "recent_activity": [{"resource_type": r["resourceType"], "id": r["id"],
                             "last_updated": r["meta"]["lastUpdated"]} for r in recent[:20]],
    }
