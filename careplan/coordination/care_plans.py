"""Create coordinated care plans from catalogue practices and keep them: status, activities, goals, team, concerns.

A plan is a CarePlan (profile coordinated-care-plan, category coordinated-care-plan, intent plan) with one CareTeam,
its Goals and health-concern Conditions; each activity cites its practice in detail.instantiatesCanonical and
carries the follow-up cadence as detail.scheduledTiming. Every change is a new version in the store, so a plan's
history is kept. A patient has at most one active coordinated care plan.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from sqlalchemy.orm import Session

from careplan.coordination import codes, practices
from careplan.coordination.errors import NotFound, RuleViolation
from careplan.coordination.store import caller_reference, read, search_all, validate
from careplan.db import Database
from careplan.errors import InvalidResource, UnprocessableEntity
from careplan.store import service

# https://hl7.org/fhir/R4/valueset-request-status.html, narrowed to what a coordinator does with a plan.
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"active", "revoked"}),
    "active": frozenset({"on-hold", "completed", "revoked"}),
    "on-hold": frozenset({"active", "completed", "revoked"}),
    "completed": frozenset(),
    "revoked": frozenset(),
}
GOAL_ACHIEVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-achievement"
CONDITION_CATEGORY_SYSTEM = codes.HEALTH_CONCERN[0]


def is_coordinated(plan: dict) -> bool:
    """Tell whether a CarePlan is a coordinated care plan (by category)."""
    return any(coding.get("system") == codes.CARE_PLAN_CATEGORY_SYSTEM
               and coding.get("code") == codes.COORDINATED_CARE_PLAN
               for category in plan.get("category", []) for coding in category.get("coding", []))


def team_of(session: Session, plan: dict) -> dict | None:
    """Return the plan's (first visible) CareTeam."""
    for reference in plan.get("careTeam", []):
        target = reference.get("reference", "")
        if target.startswith("CareTeam/"):
            try:
                return read(session, "CareTeam", target.split("/", 1)[1]).content
            except NotFound:
                continue
    return None


def _lock(patient_id: str) -> str:
    return f"coordinated-care-plan:Patient/{patient_id}"


def _require_no_other_active(session: Session, patient_id: str, except_id: str | None = None) -> None:
    plans = search_all(session, "CarePlan", [("subject", f"Patient/{patient_id}"), ("status", "active")])
    others = [p for p in plans if is_coordinated(p) and p["id"] != except_id]
    if others:
        # A business rule, not an edit conflict: 422 as on /fhir, where the store's profile check says the same.
        raise RuleViolation(f"Patient/{patient_id} already has an active coordinated care plan "
                            f"(CarePlan/{others[0]['id']}); complete, revoke or put it on hold first",
                            errors={"status": ["one active coordinated care plan per patient"]})


def _member(member: dict) -> dict:
    participant = {"role": [{"coding": [{"system": codes.CARE_TEAM_ROLE_SYSTEM, "code": member["role"]}]}],
                   "member": {"reference": member["member"]}}
    if member.get("display"):
        participant["member"]["display"] = member["display"]
    return participant


def _activity(session: Session, choice: dict, *, default_performer: str | None = None,
              start: date | None = None) -> dict:
    practice = practices.resolve(session, choice["practice"])
    detail: dict = {"status": "not-started", "instantiatesCanonical": [practices.canonical(practice)]}
    description = choice.get("description") or practice.get("title") or practice.get("name")
    if description:
        detail["description"] = description
    cadence_days = choice.get("cadence_days")
    timing = {"repeat": {"frequency": 1, "period": cadence_days, "periodUnit": "d"}} if cadence_days \
        else practices.cadence(practice)
    if not timing:
        raise RuleViolation(f"The practice {choice['practice']} has no default follow-up cadence; give cadence_days",
                            errors={"cadence_days": ["required for a practice without a default cadence"]})
    detail["scheduledTiming"] = copy.deepcopy(timing)
    if start is not None:
        # The follow-up clock of an activity added to a running plan starts when it is added, not with the plan.
        detail["scheduledTiming"].setdefault("repeat", {})["boundsPeriod"] = {"start": start.isoformat()}
    performer = choice.get("performer") or default_performer
    if not performer:
        raise RuleViolation("Name who is responsible for the activity", errors={"performer": ["required"]})
    detail["performer"] = [{"reference": performer}]
    return {"id": uuid.uuid4().hex[:12], "detail": detail}


def _goal(patient_id: str, goal: dict) -> dict:
    resource: dict = {"resourceType": "Goal", "lifecycleStatus": goal.get("lifecycle_status", "active"),
                      "description": {"text": goal["description"]},
                      "subject": {"reference": f"Patient/{patient_id}"},
                      "expressedBy": {"reference": goal.get("expressed_by") or f"Patient/{patient_id}"}}
    if goal.get("achievement_status"):
        resource["achievementStatus"] = {"coding": [{"system": GOAL_ACHIEVEMENT_SYSTEM,
                                                     "code": goal["achievement_status"]}]}
    if goal.get("target_date"):
        resource["target"] = [{"dueDate": goal["target_date"].isoformat()}]
    return resource


def _concern(patient_id: str, concern: dict) -> dict:
    categories = [{"coding": [{"system": CONDITION_CATEGORY_SYSTEM, "code": codes.HEALTH_CONCERN[1]}]}]
    if concern.get("social_need"):
        categories.append({"coding": [{"system": codes.SOCIAL_NEED_SYSTEM, "code": concern["social_need"]}]})
    return {"resourceType": "Condition", "category": categories,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"text": concern["description"]}, "subject": {"reference": f"Patient/{patient_id}"}}


def _create(session: Session, resource: dict) -> dict:
    validate(resource)
    with _profile_errors():
        return service.create_in(session, resource=resource).stored.content


@contextmanager
def _profile_errors() -> Iterator[None]:
    # The store enforces the coordinated-care-plan profile for both APIs; say what broke it in this API's terms.
    try:
        yield
    except (InvalidResource, UnprocessableEntity) as error:
        fields: dict[str, list[str]] = {}
        for issue in error.issues:
            fields.setdefault(issue.expression or "resource", []).append(issue.diagnostics)
        raise RuleViolation("; ".join(i.diagnostics for i in error.issues), errors=fields) from None


def _save(session: Session, resource: dict) -> dict:
    resource = {k: v for k, v in resource.items() if k != "meta"} | (
        {"meta": {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}}
        if resource.get("meta") else {})
    if resource.get("meta") == {}:
        del resource["meta"]
    validate(resource)
    with _profile_errors():
        return service.update_in(session, resource=resource, resource_id=resource["id"]).stored.content


def create(db: Database, *, patient_id: str, title: str, status: str = "draft", description: str | None = None,
           period_start: date | None = None, practices_chosen: list[dict], team: list[dict] | None = None,
           goals: list[dict] | None = None, concerns: list[dict] | None = None) -> dict:
    """Create a plan with its CareTeam, Goals and health concerns in one transaction; return the CarePlan."""
    if status not in ("draft", "active"):
        raise RuleViolation("A new care plan starts as draft or active", errors={"status": ["draft or active"]})
    team = list(team or [])
    if not any(m["role"] == "coordinator" for m in team):
        me = caller_reference()
        if me is None or "reference" not in me:
            raise RuleViolation("Name the coordinator in the care team",
                                errors={"team": ["a member with role coordinator is required"]})
        team.append({"role": "coordinator", "member": me["reference"]})
    if not any(m["role"] == "patient" for m in team):
        team.insert(0, {"role": "patient", "member": f"Patient/{patient_id}"})
    coordinator = next(m["member"] for m in team if m["role"] == "coordinator")
    with db.writing(lock_key=_lock(patient_id)) as session:
        read(session, "Patient", patient_id)
        if status == "active":
            _require_no_other_active(session, patient_id)
        activities = [_activity(session, choice, default_performer=coordinator) for choice in practices_chosen]
        subject = {"reference": f"Patient/{patient_id}"}
        care_team = _create(session, {"resourceType": "CareTeam", "status": "active", "subject": subject,
                                      "name": f"Care team: {title}",
                                      "participant": [_member(m) for m in team]})
        goal_refs = [{"reference": f"Goal/{_create(session, _goal(patient_id, g))['id']}"} for g in goals or []]
        concern_refs = [{"reference": f"Condition/{_create(session, _concern(patient_id, c))['id']}"}
                        for c in concerns or []]
        plan: dict = {
            "resourceType": "CarePlan", "meta": {"profile": [codes.CARE_PLAN_PROFILE]},
            "status": status, "intent": "plan",
            "category": [{"coding": [{"system": codes.CARE_PLAN_CATEGORY_SYSTEM,
                                      "code": codes.COORDINATED_CARE_PLAN,
                                      "display": "Coordinated care plan"}]}],
            "title": title, "subject": subject, "author": {"reference": coordinator},
            "careTeam": [{"reference": f"CareTeam/{care_team['id']}"}],
            "period": {"start": (period_start or date.today()).isoformat()},
        }
        if description:
            plan["description"] = description
        if concern_refs:
            plan["addresses"] = concern_refs
        if goal_refs:
            plan["goal"] = goal_refs
        if activities:
            plan["activity"] = activities
        return _create(session, plan)


def get(db: Database, *, care_plan_id: str) -> dict:
    """Return a visible coordinated care plan."""
    with db.reading() as session:
        return _plan(session, care_plan_id)


def _plan(session: Session, care_plan_id: str) -> dict:
    plan = read(session, "CarePlan", care_plan_id).content
    if not is_coordinated(plan):
        raise NotFound(f"CarePlan/{care_plan_id} is not a coordinated care plan")
    return plan


def _patient_id(plan: dict) -> str:
    return plan["subject"]["reference"].split("/", 1)[1]


def change_status(db: Database, *, care_plan_id: str, status: str) -> dict:
    """Move a plan to status when the transition is allowed; return the new version."""
    with db.reading() as session:
        patient_id = _patient_id(_plan(session, care_plan_id))
    with db.writing(lock_key=_lock(patient_id)) as session:
        plan = _plan(session, care_plan_id)
        current = plan["status"]
        if status == current:
            return plan
        allowed = TRANSITIONS.get(current, frozenset())
        if status not in allowed:
            rule = (f"{current} is final" if not allowed
                    else f"from {current} a plan may go to {', '.join(sorted(allowed))}")
            raise RuleViolation(f"A care plan cannot go from {current} to {status}: {rule}",
                                errors={"status": [rule]})
        if status == "active":
            _require_no_other_active(session, patient_id, except_id=care_plan_id)
        plan["status"] = status
        return _save(session, plan)


def add_activity(db: Database, *, care_plan_id: str, choice: dict) -> dict:
    """Add an activity from a practice to a plan, its follow-up clock starting today; return the plan."""
    from careplan.coordination.store import now

    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        plan.setdefault("activity", []).append(_activity(session, choice, default_performer=plan.get(
            "author", {}).get("reference"), start=now().date()))
        return _save(session, plan)


def update_activity(db: Database, *, care_plan_id: str, activity_id: str, status: str | None = None,
                    progress_note: str | None = None, performer: str | None = None,
                    cadence_days: int | None = None) -> dict:
    """Change an activity's status, performer or cadence, or add a progress note; return the plan."""
    from careplan.coordination.store import now

    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        activity = _find_activity(plan, activity_id)
        detail = activity.setdefault("detail", {})
        if status:
            detail["status"] = status
        if performer:
            detail["performer"] = [{"reference": performer}]
        if cadence_days:
            bounds = ((detail.get("scheduledTiming") or {}).get("repeat") or {}).get("boundsPeriod")
            detail["scheduledTiming"] = {"repeat": {"frequency": 1, "period": cadence_days, "periodUnit": "d"}}
            if bounds:  # a new cadence keeps the activity's start
                detail["scheduledTiming"]["repeat"]["boundsPeriod"] = bounds
        if progress_note:
            author = caller_reference()
            note: dict = {"text": progress_note, "time": now().strftime("%Y-%m-%dT%H:%M:%SZ")}
            if author and "reference" in author:
                note["authorReference"] = author
            activity.setdefault("progress", []).append(note)
        return _save(session, plan)


def remove_activity(db: Database, *, care_plan_id: str, activity_id: str) -> dict:
    """Remove an activity from a plan (its earlier versions keep it); return the plan."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        activity = _find_activity(plan, activity_id)
        plan["activity"] = [a for a in plan["activity"] if a is not activity]
        if not plan["activity"]:
            del plan["activity"]
        return _save(session, plan)


def _find_activity(plan: dict, activity_id: str) -> dict:
    for activity in plan.get("activity", []):
        if activity.get("id") == activity_id:
            return activity
    raise NotFound(f"CarePlan/{plan['id']} has no activity {activity_id}")


def add_goal(db: Database, *, care_plan_id: str, goal: dict) -> dict:
    """Create a Goal for the plan's patient and add it to the plan; return the Goal."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        created = _create(session, _goal(_patient_id(plan), goal))
        plan.setdefault("goal", []).append({"reference": f"Goal/{created['id']}"})
        _save(session, plan)
        return created


def update_goal(db: Database, *, care_plan_id: str, goal_id: str, lifecycle_status: str | None = None,
                achievement_status: str | None = None, target_date: date | None = None,
                description: str | None = None) -> dict:
    """Change a plan's Goal; return it."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        _require_listed(plan, "goal", f"Goal/{goal_id}")
        goal = read(session, "Goal", goal_id).content
        if lifecycle_status:
            goal["lifecycleStatus"] = lifecycle_status
        if achievement_status:
            goal["achievementStatus"] = {"coding": [{"system": GOAL_ACHIEVEMENT_SYSTEM, "code": achievement_status}]}
        if target_date:
            goal["target"] = [{"dueDate": target_date.isoformat()}]
        if description:
            goal["description"] = {"text": description}
        return _save(session, goal)


def remove_goal(db: Database, *, care_plan_id: str, goal_id: str) -> dict:
    """Take a Goal off the plan and mark it cancelled (not deleted: it was the patient's); return the plan."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        _require_listed(plan, "goal", f"Goal/{goal_id}")
        goal = read(session, "Goal", goal_id).content
        goal["lifecycleStatus"] = "cancelled"
        _save(session, goal)
        plan["goal"] = [g for g in plan["goal"] if g.get("reference") != f"Goal/{goal_id}"]
        if not plan["goal"]:
            del plan["goal"]
        return _save(session, plan)


def _require_listed(plan: dict, element: str, reference: str) -> None:
    if not any(item.get("reference") == reference for item in plan.get(element, [])):
        raise NotFound(f"{reference} is not part of CarePlan/{plan['id']}")


def add_member(db: Database, *, care_plan_id: str, member: dict) -> dict:
    """Add a member with a role to the plan's care team; return the CareTeam."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        team = team_of(session, plan)
        if team is None:
            raise NotFound(f"CarePlan/{care_plan_id} has no care team")
        team.setdefault("participant", []).append(_member(member))
        return _save(session, team)


def remove_member(db: Database, *, care_plan_id: str, member: str, role: str | None = None) -> dict:
    """Remove a member (in one role, or all of theirs) from the plan's care team; return the CareTeam."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        team = team_of(session, plan)
        if team is None:
            raise NotFound(f"CarePlan/{care_plan_id} has no care team")

        def matches(participant: dict) -> bool:
            roles = {c.get("code") for r in participant.get("role", []) for c in r.get("coding", [])}
            return participant.get("member", {}).get("reference") == member and (role is None or role in roles)

        kept = [p for p in team.get("participant", []) if not matches(p)]
        if len(kept) == len(team.get("participant", [])):
            raise NotFound(f"{member} is not on the care team of CarePlan/{care_plan_id}")
        if not any(_has_role(p, "coordinator") for p in kept):
            raise RuleViolation("A coordinated care plan's team needs a coordinator; add the new one first",
                                errors={"member": ["the last coordinator cannot be removed"]})
        team["participant"] = kept
        return _save(session, team)


def _has_role(participant: dict, role: str) -> bool:
    return any(c.get("code") == role for r in participant.get("role", []) for c in r.get("coding", []))


def add_concern(db: Database, *, care_plan_id: str, concern: dict) -> dict:
    """Record a health concern or social need (Condition) the plan addresses; return the Condition."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        created = _create(session, _concern(_patient_id(plan), concern))
        plan.setdefault("addresses", []).append({"reference": f"Condition/{created['id']}"})
        _save(session, plan)
        return created


def remove_concern(db: Database, *, care_plan_id: str, condition_id: str) -> dict:
    """Stop the plan addressing a concern (the Condition stays in the record); return the plan."""
    with db.writing() as session:
        plan = _plan(session, care_plan_id)
        _require_listed(plan, "addresses", f"Condition/{condition_id}")
        plan["addresses"] = [a for a in plan["addresses"] if a.get("reference") != f"Condition/{condition_id}"]
        if not plan["addresses"]:
            del plan["addresses"]
        return _save(session, plan)


def find(db: Database, *, patient_id: str) -> list[dict]:
    """Return the visible coordinated care plans of a patient, whoever wrote them (this API or /fhir)."""
    with db.reading() as session:
        read(session, "Patient", patient_id)
        plans = search_all(session, "CarePlan", [("subject", f"Patient/{patient_id}")])
    return [p for p in plans if is_coordinated(p)]
