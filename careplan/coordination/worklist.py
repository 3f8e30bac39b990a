"""The coordinator's worklist: follow-ups due and overdue, goals due for review, referrals waiting on a partner.

A follow-up is due one cadence period after the activity's last progress note (or, without one, after the
activity's start, else the plan's start, else the plan's last change). Items are grouped by the tier of the practice they come from, in adoption order (recommended,
promising, emerging), then those tied to no practice.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from careplan.coordination import care_plans, codes, practices
from careplan.coordination.store import caller_reference, escape, now, search_all, search_any
from careplan.db import Database
from careplan.search.dates import parse_range

WAITING_TASK_STATUSES = ("requested", "received", "accepted", "ready")
REVIEWABLE_GOAL_STATUSES = ("proposed", "planned", "accepted", "active", "on-hold")
_UNIT_DAYS = {"min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:  # a FHIR date or dateTime without offset: take it as UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def period_days(timing: dict | None) -> float | None:
    """Return the days between follow-ups a Timing asks for (period / frequency), if it says."""
    repeat = (timing or {}).get("repeat") or {}
    period, unit = repeat.get("period"), repeat.get("periodUnit")
    if not period or unit not in _UNIT_DAYS:
        return None
    return float(period) * _UNIT_DAYS[unit] / max(int(repeat.get("frequency") or 1), 1)


def _instant_or_none(text: object) -> datetime | None:
    # FHIR dateTimes may be partial (2026, 2026-11): take the first moment they name; anything else is no baseline.
    if not isinstance(text, str) or not text:
        return None
    if len(text) in (4, 7):
        text = text + ("-01-01" if len(text) == 4 else "-01")
    try:
        return _instant(text)
    except ValueError:
        return None


def _activity_start(detail: dict) -> datetime | None:
    timing = detail.get("scheduledTiming")
    bounds = ((timing.get("repeat") or {}) if isinstance(timing, dict) else {}).get("boundsPeriod") or {}
    scheduled = detail.get("scheduledPeriod") or {}
    return _instant_or_none(bounds.get("start")) or _instant_or_none(scheduled.get("start"))


def follow_ups_of(plan: dict, *, practices: dict[str, dict]) -> list[dict]:
    """Return the follow-ups of a plan's open activities that have a cadence, with their due date.

    The clock runs from the activity's last progress note; without one, from the activity's own start
    (scheduledTiming.repeat.boundsPeriod.start or scheduledPeriod.start), else the plan's period.start, else the
    plan's last change.
    """
    items = []
    plan_start = _instant_or_none((plan.get("period") or {}).get("start"))
    changed = _instant_or_none((plan.get("meta") or {}).get("lastUpdated")) or now()
    for activity in plan.get("activity", []):
        detail = activity.get("detail") or {}
        if detail.get("status") in ("completed", "cancelled", "stopped", "entered-in-error"):
            continue
        canonical = (detail.get("instantiatesCanonical") or [None])[0]
        practice = practices.get(canonical) if canonical else None
        # An activity scheduled by a period (scheduledPeriod) follows its practice's default cadence.
        every = period_days(detail.get("scheduledTiming")) or (
            period_days(practice_cadence(practice)) if practice else None)
        if every is None:
            continue
        notes = [moment for n in activity.get("progress", []) for moment in [_instant_or_none(n.get("time"))]
                 if moment is not None]
        last = max(notes) if notes else _activity_start(detail) or plan_start or changed
        items.append({
            "kind": "follow-up", "care_plan": plan["id"], "patient": plan["subject"]["reference"],
            "activity": activity.get("id"), "description": detail.get("description"),
            "practice": canonical, "tier": practice_tier(practice),
            "performer": [p.get("reference") for p in detail.get("performer", []) if p.get("reference")],
            "last_contact": last.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "due": (last + timedelta(days=every)).date().isoformat(),
        })
    return items


def practice_cadence(practice: dict | None) -> dict | None:
    """Return the default follow-up cadence (a Timing) of a practice, or None."""
    return practices.cadence(practice) if practice else None


def practice_tier(practice: dict | None) -> str | None:
    """Return the tier of a practice, or None."""
    return practices.tier_of(practice) if practice else None


def build(db: Database, *, coordinator: str | None = None, within_days: int = 7,
          today: date | None = None) -> dict:
    """Return the worklist of a coordinator (default: the caller), grouped by tier in adoption order."""
    today = today or now().date()
    horizon = today + timedelta(days=within_days)
    if coordinator is None:
        me = caller_reference() or {}
        coordinator = me.get("reference")
    with db.reading() as session:
        plans = _plans_of(session, coordinator)
        patients = {p["subject"]["reference"] for p in plans}
        canonicals = {(a.get("detail") or {}).get("instantiatesCanonical", [None])[0]
                      for p in plans for a in p.get("activity", [])} - {None}
        # One search for the goals due by the horizon in a reviewable state; their patients are checked here, since
        # adding subject=<hundreds of patients> to the date search made it slower per chunk than the whole scan.
        goals = search_all(session, "Goal", [("target-date", f"le{horizon.isoformat()}"), (
            "lifecycle-status", ",".join(REVIEWABLE_GOAL_STATUSES))]) if patients else []
        tasks = search_any(session, "Task", [("status", ",".join(WAITING_TASK_STATUSES))], "subject",
                           patients) if patients else []
        tasks = [t for t in tasks if (t.get("for") or {}).get("reference") in patients]
        canonicals |= {c for t in tasks for c in [t.get("instantiatesCanonical")] if c}
        known = practices.by_urls(session, canonicals)
        levels = _referral_levels(session, tasks)  # issue 6: the partners' service levels

    items = []
    for plan in plans:
        for item in follow_ups_of(plan, practices=known):
            if date.fromisoformat(item["due"]) <= horizon:
                item["state"] = "overdue" if date.fromisoformat(item["due"]) < today else "due"
                items.append(item)
    for goal in goals:
        if goal.get("subject", {}).get("reference") not in patients \
                or goal.get("lifecycleStatus") not in REVIEWABLE_GOAL_STATUSES:
            continue
        dues = [day for t in goal.get("target", []) for day in [_deadline(t.get("dueDate"))] if day is not None]
        if not dues:
            continue
        due = min(dues)
        items.append({"kind": "goal-review", "goal": goal["id"], "patient": goal["subject"]["reference"],
                      "description": (goal.get("description") or {}).get("text"), "practice": None, "tier": None,
                      "due": due.isoformat(), "state": "overdue" if due < today else "due"})
    for task in tasks:
        canonical = task.get("instantiatesCanonical")
        items.append({"kind": "referral", "task": task["id"], "patient": task["for"]["reference"],
                      "description": task.get("description"), "status": task["status"],
                      "owner": (task.get("owner") or {}).get("reference"), "practice": canonical,
                      "tier": practice_tier(known.get(canonical)) if canonical else None,
                      "due": levels[task["id"]]["due"] or ((task.get("restriction") or {}).get("period") or {}
                                                          ).get("end", today.isoformat())[:10],
                      "state": "overdue" if levels[task["id"]]["overdue"] else "waiting"})
    return {"coordinator": coordinator, "today": today.isoformat(), "within_days": within_days,
            "groups": group(items)}


def _deadline(text: object) -> date | None:
    """Return the last day a FHIR date names (2026 is 2026-12-31, 2026-11 is 2026-11-30), or None if it is none."""
    if not isinstance(text, str):
        return None
    try:
        return parse_range(text)[1].date()  # the search index's own reading of the date
    except ValueError:
        return None


def _referral_levels(session, tasks: list[dict]) -> dict[str, dict]:
    """Return, per referral Task, when its partner is due to act next (YYYY-MM-DD) and whether it is late."""
    from careplan import config
    from careplan.referrals import service as referrals  # imported late: referrals builds on coordination

    settings = config.from_env()
    found = {}
    # One query for the version histories of every referral Task, not one per Task.
    histories = referrals.versions_of(session, [t for t in tasks if referrals.is_referral(t)])
    for task in tasks:
        if not referrals.is_referral(task):
            found[task["id"]] = {"due": None, "overdue": False}
            continue
        levels = referrals.sla_of(task, histories[task["id"]], settings=settings,
                                  moment=now(), zone=referrals.zone_of(session, task, settings=settings))
        due = levels["response_due"] if task.get("status") in ("requested", "received") else levels["contact_due"]
        found[task["id"]] = {"due": due[:10] if due else None,
                             "overdue": levels["response_overdue"] or levels["contact_overdue"]}
    return found


def group(items: list[dict]) -> list[dict]:
    """Group items by tier in adoption order, then the ones of no practice; within a group by due date."""
    order = practices.tier_order()
    groups = []
    for tier in [*order, *sorted({i["tier"] for i in items if i["tier"] and i["tier"] not in order}), None]:
        members = sorted((i for i in items if i["tier"] == tier), key=lambda i: (i["due"], i["kind"]))
        if members:
            groups.append({"tier": tier, "label": tier or "no practice", "items": members})
    return groups


def _plans_of(session, coordinator: str | None) -> list[dict]:
    """Return the active coordinated plans the coordinator authors or coordinates (all of them for None)."""
    params = [("status", "active"), ("category", f"{codes.CARE_PLAN_CATEGORY_SYSTEM}|{codes.COORDINATED_CARE_PLAN}")]
    plans = search_all(session, "CarePlan", params)
    if coordinator is None:
        return plans
    # R4 CarePlan has no `author` search parameter, so authorship is checked here; the care team is asked of the
    # index (chained search), and only those candidates' teams are read to check the role and that it is the plan's
    # first visible team, instead of reading the team of every plan.
    teamed = {p["id"] for p in search_all(session, "CarePlan", [
        *params, ("care-team:CareTeam.participant", escape(coordinator))])}
    return [p for p in plans if (p.get("author") or {}).get("reference") == coordinator
            or (p["id"] in teamed and _coordinates(session, p, coordinator))]


def _coordinates(session, plan: dict, coordinator: str | None) -> bool:
    if coordinator is None:
        return True
    if (plan.get("author") or {}).get("reference") == coordinator:
        return True
    team = care_plans.team_of(session, plan)
    return bool(team) and any(
        care_plans._has_role(p, "coordinator") and p.get("member", {}).get("reference") == coordinator
        for p in team.get("participant", []))
