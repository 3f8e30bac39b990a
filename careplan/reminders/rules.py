"""Write, move and cancel reminder rows in the transaction of the write that causes them.

``sync_for_write`` runs after every store write (``careplan.store.service``), so /fhir, transaction Bundles, imports
and /api/v1 give the same reminders. Each rule recomputes the reminders its resource wants from its new content and
reconciles them with the rows it already has: a key names one occurrence (e.g. the follow-up after a given baseline),
so re-saving the same thing changes nothing, a changed cadence moves the scheduled row, and what is no longer wanted
is cancelled. Only ``scheduled`` rows move or cancel; claimed and sent ones belong to the scheduler.

``schedule_periodic`` writes the time-driven rows (daily digests, the next plan review) on each scheduler tick.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from careplan.models import Resource, utcnow
from careplan.practices import catalogue, profiles, tiers
from careplan.reminders import policy as reminder_policy
from careplan.reminders import timing
from careplan.reminders.models import OVERDUE_WHERE, REMINDER_OPEN, RecipientPreference, Reminder


WATCHED_TYPES = frozenset({"CarePlan", "Goal", "Task", "CareTeam"})
CLOSED_ACTIVITY = frozenset({"completed", "cancelled", "stopped", "entered-in-error"})
REVIEWABLE_GOAL = frozenset({"proposed", "planned", "accepted", "active", "on-hold"})
AWAITING_RESPONSE = frozenset({"requested", "received"})
RESPONDED = frozenset({"accepted", "rejected", "ready", "in-progress", "on-hold", "completed", "cancelled", "failed",
                       "entered-in-error"})
CONTACTED_STATUSES = frozenset({"in-progress", "completed"})
DIRECT_RECIPIENTS = ("Practitioner/", "PractitionerRole/", "Organization/")
CARE_TEAM_ROLE_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/care-team-role"
TIMEZONE_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/timezone"
ACTIVITY_ID_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/activity-id"
REVIEW_INTERVAL_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/review-interval"
CONTACTED_BUSINESS_STATUS = "client-contacted"
FOLLOW_UP_KINDS = ("follow-up", "follow-up-overdue", "follow-up-escalation", "plan-review")
ACTIVITY_KINDS = ("follow-up", "follow-up-overdue", "follow-up-escalation")
REFERRAL_KINDS = ("referral-response", "referral-escalation", "referral-contact")
SUCCESSOR_KINDS = ("follow-up-overdue",)  # sending one of these schedules the next (after_sent)
_DURATION_DAYS = {"d": 1, "wk": 7, "mo": 30, "a": 365}
PERIODIC_PASS_INTERVAL = timedelta(seconds=60)
_last_pass: dict[str, datetime] = {}  # per database URL: when this process last ran the periodic pass


@dataclass(frozen=True)
class Preferences:
    """Where and when a recipient wants reminders."""

    zone: ZoneInfo
    quiet_start: time | None = None
    quiet_end: time | None = None
    digest_time: time = time(7, 30)


@dataclass
class Wanted:
    """A reminder a rule wants to exist."""

    key: str
    kind: str
    source: str
    recipient: str
    due_at: datetime
    patient: str | None = None
    tier: str | None = None
    payload: dict = field(default_factory=dict)


class _Sync:
    """One rule run: the session, policy and clock, with per-run caches of preferences and practices."""

    def __init__(self, session: Session, now: datetime):
        self.session = session
        self.now = timing.utc(now)
        self.policy = reminder_policy.current()
        self._preferences: dict[str, Preferences] = {}
        self._tiers: dict[str, str | None] = {}

    def preferences(self, recipient: str) -> Preferences:
        if recipient not in self._preferences:
            self._preferences[recipient] = preferences_of(self.session, recipient, policy=self.policy)
        return self._preferences[recipient]

    def tier(self, canonical: str | None) -> str | None:
        if not canonical:
            return None
        if canonical not in self._tiers:
            practice = catalogue.practice_by_url(self.session, canonical)
            self._tiers[canonical] = tiers.tier_of(practice) if practice else None
        return self._tiers[canonical]

    def due(self, base: datetime, days: float, recipient: str, tier: str | None) -> datetime:
        prefs = self.preferences(recipient)
        return timing.due_at(base, days=days, lead_days=self.policy.lead(tier), tz=prefs.zone,
                             quiet_start=prefs.quiet_start, quiet_end=prefs.quiet_end)


def preferences_of(session: Session, recipient: str, *, policy: reminder_policy.Policy | None = None
                   ) -> Preferences:
    """Return a recipient's stored preferences, else an agency's time zone, else the defaults."""
    policy = policy or reminder_policy.current()
    row = session.get(RecipientPreference, recipient)
    if row is not None:
        return Preferences(timing.zone(row.timezone, default=policy.default_timezone),
                           _hhmm(row.quiet_start), _hhmm(row.quiet_end), _hhmm(row.digest_time) or policy.digest_time)
    zone_name = None
    if recipient.startswith("Organization/"):
        organization = _content(session, "Organization", recipient.split("/", 1)[1])
        zone_name = next((e.get("valueCode") for e in (organization or {}).get("extension") or []
                          if isinstance(e, dict) and e.get("url") == TIMEZONE_EXTENSION), None)
    return Preferences(timing.zone(zone_name, default=policy.default_timezone), digest_time=policy.digest_time)


def _hhmm(text: str | None) -> time | None:
    try:
        return timing.parse_hhmm(text)
    except ValueError:
        return None


# -- entry points ------------------------------------------------------------------------------------------------


def sync_for_write(session: Session, *, old: dict | None, new: dict | None, now: datetime | None = None) -> None:
    """Bring the reminders of a written (or deleted: new None) resource in line with it, inside session."""
    resource = new if new is not None else old
    if isinstance(resource, dict) and resource.get("resourceType") == "PlanDefinition":
        _retier(session, old=old, new=new, now=now)
        return
    if not isinstance(resource, dict) or resource.get("resourceType") not in WATCHED_TYPES:
        return  # the common case (imports, observations, audit events): nothing to do, and fast
    kind = resource["resourceType"]
    if kind == "CarePlan" and not (_coordinated(new) or _coordinated(old)):
        return
    if kind == "Task" and not (_is_referral(new) or _is_referral(old)):
        return
    run = _Sync(session, now or utcnow())
    if kind == "CareTeam":
        _sync_team(run, resource.get("id") or "", old, new)
    elif kind == "CarePlan":
        _sync_care_plan(run, resource.get("id") or "", new)
    elif kind == "Goal":
        _sync_goal(run, resource.get("id") or "", new)
    else:
        _sync_referral(run, resource.get("id") or "", new)
    session.flush()


def _retier(session: Session, *, old: dict | None, new: dict | None, now: datetime | None) -> None:
    """Recompute the waiting reminders of a practice whose tier a curator changed (lead time, escalation, tier)."""
    url = (new or old or {}).get("url")
    if not url or tiers.tier_of(old or {}) == tiers.tier_of(new or {}):
        return
    # A scan of the waiting activity reminders, not an index: tiers change rarely, and only by an admin.
    sources = sorted(set(session.scalars(select(Reminder.source).where(
        Reminder.state == "scheduled", Reminder.kind.in_(ACTIVITY_KINDS),
        Reminder.payload["practice"].as_string() == url))))
    resync_sources(session, sources=sources, now=now)


def resync_sources(session: Session, *, sources: list[str], now: datetime | None = None) -> None:
    """Recompute the reminders of the resources behind reminder sources (after a recipient changed time zone)."""
    seen: set[str] = set()
    for source in sources:
        reference = source.split("#", 1)[0]
        resource_type, _, resource_id = reference.partition("/")
        if reference in seen or resource_type not in WATCHED_TYPES:
            continue
        seen.add(reference)
        content = _content(session, resource_type, resource_id)
        if content is not None:
            sync_for_write(session, old=content, new=content, now=now)


def schedule_periodic(db, *, now: datetime | None = None) -> int:
    """Create today's digest per recipient (at their local digest time) and roll plan reviews forward; return count.

    Without a pinned ``now`` (the scheduler's real-time ticks) the pass runs at most once a minute per process.
    A digest's key is ``digest|<recipient>|<local date>``: however often this runs, and after any downtime, each
    recipient gets one digest for the latest digest time that has passed, never one per missed day.
    """
    if now is None:
        # Real-time ticks come every few seconds; the pass scans recipients, and once a minute is soon enough.
        now = utcnow()
        last = _last_pass.get(db.url)
        if last is not None and timedelta(0) <= now - last < PERIODIC_PASS_INTERVAL:
            return 0
        _last_pass[db.url] = now
    now = timing.utc(now)
    with db.writing() as session:
        created = _schedule_digests(session, now) + _roll_plan_reviews(session, now)
    return created


# -- care plans --------------------------------------------------------------------------------------------------


def _coordinated(resource: dict | None) -> bool:
    return isinstance(resource, dict) and profiles.is_coordinated(resource)


def _sync_care_plan(run: _Sync, plan_id: str, plan: dict | None) -> None:
    reference = f"CarePlan/{plan_id}"
    existing = list(run.session.scalars(select(Reminder).where(
        or_(Reminder.source == reference, Reminder.source.startswith(reference + "#", autoescape=True)),
        Reminder.kind.in_(FOLLOW_UP_KINDS))))
    wanted: list[Wanted] = []
    live = plan is not None and _coordinated(plan)
    coordinator = _coordinator_of(run.session, plan) if live else None
    patient = ((plan or {}).get("subject") or {}).get("reference")
    for index, activity in enumerate((plan or {}).get("activity") or []):
        if not isinstance(activity, dict):
            continue
        activity_key = str(activity.get("id") or index)[:64]  # keeps the key within its column
        source = f"{reference}#{activity_key}"
        mine = [r for r in existing if r.source == source and r.kind in ACTIVITY_KINDS]
        detail = activity.get("detail") if isinstance(activity.get("detail"), dict) else {}
        recipient = (_performer(detail) or coordinator) if live else None
        # A date without a time (a start date) is read in the recipient's own time zone.
        prefs_zone = run.preferences(recipient).zone if recipient else timing.zone(run.policy.default_timezone)
        notes = sorted(moment for n in activity.get("progress") or []
                       if isinstance(n, dict) and isinstance(n.get("time"), str)
                       for moment in [_parse(n["time"], prefs_zone)] if moment is not None)
        _mark_done_by_notes(mine, notes)
        if detail.get("status") in CLOSED_ACTIVITY:
            for row in mine:
                if row.done_at is None and row.state != "cancelled":
                    row.done_at = run.now
            continue
        if not live or plan.get("status") != "active":
            continue
        every = _period_days(detail.get("scheduledTiming"))
        if every is None or every <= 0:
            continue
        if recipient is None:
            continue
        # The key names the occurrence by its baseline; a start date stays a date so a time zone change moves the
        # reminder instead of replacing it.
        if notes:
            baseline, label = notes[-1], _stamp(notes[-1])
        else:
            baseline, label = _activity_start(detail, plan, prefs_zone) or _known_baseline(
                [r for r in mine if r.kind == "follow-up"]) or (run.now, _stamp(run.now))
        canonical = (detail.get("instantiatesCanonical") or [None])[0]
        tier = run.tier(canonical)
        prefs = run.preferences(recipient)
        due_moment = timing.add_days(baseline, every, tz=prefs.zone)
        wanted.append(Wanted(
            key=f"follow-up|{reference}|{activity_key}|{label}", kind="follow-up", source=source,
            recipient=recipient, patient=patient, tier=tier, due_at=run.due(baseline, every, recipient, tier),
            payload={"care_plan": reference, "activity": activity_key, "practice": canonical,
                     "baseline": _iso(baseline), "baseline_key": label, "due": _iso(due_moment),
                     "cadence_days": every, "coordinator": coordinator}))
        wanted.append(_follow_up_overdue(run, wanted[-1], mine, baseline, label, every, due_moment))
        escalation = _follow_up_escalation(run, plan, source, recipient, coordinator, patient, tier, canonical,
                                           baseline, label, every, mine)
        if escalation is not None:
            wanted.append(escalation)
    if live and plan.get("status") == "active" and coordinator:
        review = _plan_review(run, reference, plan, coordinator, patient, existing)
        if review is not None:
            wanted.append(review)
    _reconcile(run.session, existing, wanted, now=run.now)
    if live:
        for goal in plan.get("goal") or []:
            target = (goal or {}).get("reference") or ""
            if target.startswith("Goal/"):
                _sync_goal(run, target.split("/", 1)[1], _content(run.session, "Goal", target.split("/", 1)[1]))


def _sync_team(run: _Sync, team_id: str, old: dict | None, new: dict | None) -> None:
    # The coordinator lives on the care team: a change of coordinator readdresses the plans' reminders.
    if _coordinators(old) == _coordinators(new):
        return
    from careplan.search import query as search_query

    rows = search_query.matching_rows(run.session, "CarePlan", search_query.parse(
        [("care-team", f"CareTeam/{team_id}")]), limit=50)
    for row in rows:
        if not row.deleted and _coordinated(row.content):
            _sync_care_plan(run, row.res_id, row.content)


def _coordinators(team: dict | None) -> list[str]:
    return sorted((p.get("member") or {}).get("reference") or "" for p in (team or {}).get("participant") or []
                  if isinstance(p, dict) and any(c.get("code") == "coordinator" for r in p.get("role") or []
                                                 for c in r.get("coding") or []))


def _plan_review(run: _Sync, reference: str, plan: dict, coordinator: str, patient: str | None,
                 existing: list[Reminder]) -> Wanted | None:
    every = run.policy.plan_review_days
    prefs = run.preferences(coordinator)
    start, label = _plan_start(plan, prefs.zone) or _known_baseline(
        [r for r in existing if r.kind == "plan-review"]) or (run.now, _stamp(run.now))
    reviews = [r for r in existing if r.kind == "plan-review"]
    last_sent = max((timing.utc(datetime.fromisoformat(r.payload["due"])) for r in reviews
                     if r.state in ("claimed", "sent") and (r.payload or {}).get("due")), default=None)
    due_moment = timing.add_days(start, every, tz=prefs.zone)
    step = 1
    while last_sent is not None and due_moment <= last_sent and step < 10000:
        step += 1
        due_moment = timing.add_days(start, every * step, tz=prefs.zone)
    local_day = due_moment.astimezone(prefs.zone).date()
    return Wanted(key=f"plan-review|{reference}|{local_day.isoformat()}", kind="plan-review", source=reference,
                  recipient=coordinator, patient=patient, tier=None,
                  due_at=timing.out_of_quiet_hours(due_moment, tz=prefs.zone, start=prefs.quiet_start,
                                                   end=prefs.quiet_end),
                  payload={"care_plan": reference, "baseline": _iso(start), "baseline_key": label,
                           "due": _iso(due_moment),
                           "every_days": every, "coordinator": coordinator})


def _follow_up_overdue(run: _Sync, follow_up: Wanted, mine: list[Reminder], baseline: datetime, label: str,
                       every: float, due_moment: datetime) -> Wanted:
    """Return the next "still not done" reminder of a follow-up: one per cadence period past its due moment.

    The first is scheduled ahead, one period after the due moment; when one goes out the scheduler asks for its
    successor (``after_sent``). After downtime only the latest period that has passed is sent, not one per period
    missed. A progress note (a new baseline) or a closed activity cancels it like the follow-up itself.
    """
    sent = [int((r.payload or {}).get("periods_overdue") or 0) for r in mine
            if r.kind == "follow-up-overdue" and r.state in ("claimed", "sent")
            and (r.payload or {}).get("baseline_key") == label]
    passed = int((run.now - due_moment) / timedelta(days=every)) if run.now > due_moment else 0
    periods = max(max(sent, default=0) + 1, passed, 1)
    prefs = run.preferences(follow_up.recipient)
    moment = timing.add_days(baseline, every * (periods + 1), tz=prefs.zone)
    return Wanted(key=f"follow-up-overdue|{follow_up.key.split('|', 1)[1]}|{periods}", kind="follow-up-overdue",
                  source=follow_up.source, recipient=follow_up.recipient, patient=follow_up.patient,
                  tier=follow_up.tier,
                  due_at=timing.out_of_quiet_hours(moment, tz=prefs.zone, start=prefs.quiet_start,
                                                   end=prefs.quiet_end),
                  payload={**follow_up.payload, "due": _iso(due_moment), "periods_overdue": periods,
                           "overdue_at": _iso(moment)})


def after_sent(session: Session, *, reminders: list[Reminder], now: datetime) -> None:
    """Schedule the successors of reminders that just went out (a follow-up still not done, one period later)."""
    plans = sorted({r.source.split("#", 1)[0] for r in reminders
                    if r.kind in SUCCESSOR_KINDS and r.source.startswith("CarePlan/")})
    for reference in plans:
        plan = _content(session, "CarePlan", reference.split("/", 1)[1])
        if plan is not None:
            _sync_care_plan(_Sync(session, now), plan["id"], plan)
    if plans:
        session.flush()


def _follow_up_escalation(run: _Sync, plan: dict, source: str, recipient: str, coordinator: str | None,
                          patient: str | None, tier: str | None, canonical: str | None, baseline: datetime,
                          label: str, every: float, mine: list[Reminder]) -> Wanted | None:
    """Return the escalation due when the activity's follow-up has been missed the tier's number of times in a row.

    Misses are counted in cadence periods: each due moment that passes without a progress note is one, and so is
    each earlier follow-up of the activity done late (its note after its due moment), back to the last one done on
    time. The row is scheduled ahead, at the due moment of the Nth miss, so the queue's due scan (an index) detects
    the miss; a note or a closed activity moves or cancels it in the same transaction, and its key (the baseline)
    never duplicates it.
    """
    target = _escalation_recipient(plan, recipient, coordinator)
    if target is None:
        return None
    late = 0
    sent = sorted((r for r in mine if r.kind == "follow-up" and r.state == "sent" and (r.payload or {}).get("due")
                   and (r.payload or {}).get("baseline_key") != label), key=lambda r: r.payload["due"], reverse=True)
    for row in sent:
        if row.done_at is None or timing.utc(row.done_at) <= timing.utc(datetime.fromisoformat(row.payload["due"])):
            break
        late += 1
    misses = run.policy.misses(tier)
    periods = max(1, misses - late)
    prefs = run.preferences(target)
    moment = timing.add_days(baseline, every * periods, tz=prefs.zone)
    activity_key = source.split("#", 1)[1]
    return Wanted(key=f"follow-up-escalation|{source.split('#', 1)[0]}|{activity_key}|{label}",
                  kind="follow-up-escalation", source=source, recipient=target, patient=patient, tier=tier,
                  due_at=timing.out_of_quiet_hours(moment, tz=prefs.zone, start=prefs.quiet_start,
                                                   end=prefs.quiet_end),
                  payload={"care_plan": source.split("#", 1)[0], "activity": activity_key, "practice": canonical,
                           "baseline": _iso(baseline), "baseline_key": label, "due": _iso(moment),
                           "misses": late + periods, "follow_up_recipient": recipient, "coordinator": coordinator})


def _escalation_recipient(plan: dict, recipient: str, coordinator: str | None) -> str | None:
    # The coordinator hears of a performer's missed follow-ups; when the coordinator is the one missing them, the
    # plan's author (if someone else) does; with nobody else on record it still goes to the coordinator, as a
    # louder message than the digest's overdue line.
    if coordinator and coordinator != recipient:
        return coordinator
    author = ((plan or {}).get("author") or {}).get("reference")
    if isinstance(author, str) and author.startswith(DIRECT_RECIPIENTS) and author != recipient:
        return author
    return coordinator or recipient


def _mark_done_by_notes(rows: list[Reminder], notes: list[datetime]) -> None:
    # A progress note after a reminder's baseline means that follow-up happened, at the first such note.
    for row in rows:
        baseline = (row.payload or {}).get("baseline")
        if row.done_at is not None or row.state == "cancelled" or not baseline:
            continue
        after = [n for n in notes if n > timing.utc(datetime.fromisoformat(baseline))]
        if after:
            row.done_at = after[0]


def _performer(detail: dict) -> str | None:
    for performer in detail.get("performer") or []:
        target = (performer or {}).get("reference") if isinstance(performer, dict) else None
        if isinstance(target, str) and target.startswith(DIRECT_RECIPIENTS):
            return target
    return None


def _coordinator_of(session: Session, plan: dict | None) -> str | None:
    if not plan:
        return None
    for team_reference in plan.get("careTeam") or []:
        target = (team_reference or {}).get("reference") or ""
        if not target.startswith("CareTeam/"):
            continue
        team = _content(session, "CareTeam", target.split("/", 1)[1]) or {}
        for participant in team.get("participant") or []:
            roles = {c.get("code") for r in participant.get("role") or [] for c in r.get("coding") or []
                     if c.get("system") in (CARE_TEAM_ROLE_SYSTEM, None)}
            member = (participant.get("member") or {}).get("reference")
            if "coordinator" in roles and isinstance(member, str) and member.startswith(DIRECT_RECIPIENTS):
                return member
    author = (plan.get("author") or {}).get("reference")
    return author if isinstance(author, str) and author.startswith(DIRECT_RECIPIENTS) else None


def _activity_start(detail: dict, plan: dict, zone: ZoneInfo) -> tuple[datetime, str] | None:
    repeat = (detail.get("scheduledTiming") or {}).get("repeat") or {}
    for candidate in ((detail.get("scheduledPeriod") or {}).get("start"),
                      (repeat.get("boundsPeriod") or {}).get("start")):
        if isinstance(candidate, str):
            return _start(candidate, zone)
    return _plan_start(plan, zone)


def _plan_start(plan: dict, zone: ZoneInfo) -> tuple[datetime, str] | None:
    start = (plan.get("period") or {}).get("start")
    return _start(start, zone) if isinstance(start, str) else None


def _start(text: str, zone: ZoneInfo) -> tuple[datetime, str] | None:
    moment = _parse(text, zone)
    if moment is None:
        return None
    return moment, (text if len(text) <= 10 else _stamp(moment))


def _parse(text: str, zone: ZoneInfo) -> datetime | None:
    try:
        return timing.parse_instant(text, tz=zone)
    except ValueError:
        return None


def _known_baseline(rows: list[Reminder]) -> tuple[datetime, str] | None:
    # Without a note or a start date, the first reminder's baseline (the write that created it) stays the baseline.
    known = sorted(((r.payload["baseline"], r.payload.get("baseline_key")) for r in rows
                    if r.state != "cancelled" and (r.payload or {}).get("baseline")), reverse=True)
    if not known:
        return None
    moment = timing.utc(datetime.fromisoformat(known[0][0]))
    return moment, known[0][1] or _stamp(moment)


def _period_days(timing_element: dict | None) -> float | None:
    from careplan.coordination.worklist import period_days

    try:
        return period_days(timing_element if isinstance(timing_element, dict) else None)
    except (TypeError, ValueError):
        return None


# -- goals -------------------------------------------------------------------------------------------------------


def _sync_goal(run: _Sync, goal_id: str, goal: dict | None) -> None:
    reference = f"Goal/{goal_id}"
    existing = list(run.session.scalars(select(Reminder).where(Reminder.source == reference,
                                                               Reminder.kind == "goal-review")))
    wanted: list[Wanted] = []
    achieved = any(c.get("code") == "achieved" for c in ((goal or {}).get("achievementStatus") or {}).get(
        "coding") or [])
    if goal is not None and goal.get("lifecycleStatus") in REVIEWABLE_GOAL and not achieved:
        plan = _plan_of_goal(run.session, goal_id, goal)
        recipient = _coordinator_of(run.session, plan)
        if recipient is None:
            expressed = ((goal.get("expressedBy") or {}).get("reference")) or ""
            recipient = expressed if expressed.startswith(DIRECT_RECIPIENTS) else None
        if recipient is not None:
            prefs = run.preferences(recipient)
            due_moment = _goal_due(goal, prefs.zone, run)
            if due_moment is not None:
                day = due_moment.astimezone(prefs.zone).date()
                wanted.append(Wanted(
                    key=f"goal-review|{reference}|{day.isoformat()}", kind="goal-review", source=reference,
                    recipient=recipient, patient=((goal.get("subject") or {}).get("reference")), tier=None,
                    due_at=timing.out_of_quiet_hours(due_moment, tz=prefs.zone, start=prefs.quiet_start,
                                                     end=prefs.quiet_end),
                    payload={"goal": reference, "due": _iso(due_moment), "coordinator": recipient,
                             "care_plan": f"CarePlan/{plan['id']}" if plan else None}))
    elif goal is not None and (achieved or goal.get("lifecycleStatus") == "completed"):
        for row in existing:
            if row.done_at is None and row.state != "cancelled":
                row.done_at = run.now
    _reconcile(run.session, existing, wanted, now=run.now)


def _goal_due(goal: dict, zone: ZoneInfo, run: _Sync) -> datetime | None:
    dues = sorted(t["dueDate"] for t in goal.get("target") or [] if isinstance(t, dict)
                  and isinstance(t.get("dueDate"), str))
    if dues:
        return _parse(dues[0], zone)
    for extension in goal.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == REVIEW_INTERVAL_EXTENSION:
            duration = extension.get("valueDuration") or {}
            unit = duration.get("code") or duration.get("unit")
            if isinstance(duration.get("value"), (int, float)) and unit in _DURATION_DAYS:
                start = _parse(goal.get("statusDate") or goal.get("startDate") or "", zone) \
                    if isinstance(goal.get("statusDate") or goal.get("startDate"), str) else None
                start = start or run.now
                every = float(duration["value"]) * _DURATION_DAYS[unit]
                moment = timing.add_days(start, every, tz=zone)
                while moment <= run.now:
                    moment = timing.add_days(moment, every, tz=zone)
                return moment
    return None


def _plan_of_goal(session: Session, goal_id: str, goal: dict) -> dict | None:
    from careplan.search import query as search_query

    rows = search_query.matching_rows(session, "CarePlan", search_query.parse([("goal", f"Goal/{goal_id}")]),
                                      limit=20)
    plans = [row.content for row in rows if not row.deleted and _coordinated(row.content)]
    plans.sort(key=lambda p: p.get("status") != "active")
    return plans[0] if plans else None


# -- referrals ---------------------------------------------------------------------------------------------------


def _is_referral(task: dict | None) -> bool:
    return isinstance(task, dict) and task.get("intent") == "order" and str(
        (task.get("owner") or {}).get("reference") or "").startswith("Organization/")


def _sync_referral(run: _Sync, task_id: str, task: dict | None) -> None:
    reference = f"Task/{task_id}"
    existing = list(run.session.scalars(select(Reminder).where(Reminder.source == reference,
                                                               Reminder.kind.in_(REFERRAL_KINDS))))
    wanted: list[Wanted] = []
    status = (task or {}).get("status")
    contacted = status in CONTACTED_STATUSES or any(
        c.get("code") == CONTACTED_BUSINESS_STATUS for c in ((task or {}).get("businessStatus") or {}).get(
            "coding") or [])
    if task is not None and status in RESPONDED:
        _mark_done(existing, ("referral-response", "referral-escalation"), run.now)
    if contacted or (task is not None and status in RESPONDED - {"accepted", "ready"}):
        _mark_done(existing, ("referral-contact",), run.now)
    if task is not None and _is_referral(task):
        owner = task["owner"]["reference"]
        requester = ((task.get("requester") or {}).get("reference")) or None
        patient = ((task.get("for") or {}).get("reference")) or None
        tier = run.tier(_task_practice(run.session, task))
        owner_zone = run.preferences(owner).zone
        common = {"task": reference, "focus": (task.get("focus") or {}).get("reference"), "coordinator": requester}
        if status in AWAITING_RESPONSE:
            sent_at = _known(existing, "referral-response", "sent_at") or _parse_or(
                task.get("authoredOn"), owner_zone) or run.now
            response_due = _business_days(sent_at, _env_int("CAREPLAN_SLA_RESPONSE_BUSINESS_DAYS", 2), owner_zone)
            wanted.append(_referral_wanted(run, "referral-response", reference, owner, patient, tier, response_due,
                                           {**common, "sent_at": _iso(sent_at), "due": _iso(response_due)}))
            if requester and requester.startswith(DIRECT_RECIPIENTS):
                misses = run.policy.misses(tier)
                escalate = _business_days(response_due, misses, owner_zone)
                wanted.append(_referral_wanted(
                    run, "referral-escalation", reference, requester, patient, tier, escalate,
                    {**common, "sent_at": _iso(sent_at), "due": _iso(escalate), "misses": misses}, lead=False))
        elif status in ("accepted", "ready") and not contacted:
            accepted_at = _known(existing, "referral-contact", "accepted_at") or run.now
            contact_due = _business_days(accepted_at, _env_int("CAREPLAN_SLA_CONTACT_BUSINESS_DAYS", 5), owner_zone)
            wanted.append(_referral_wanted(run, "referral-contact", reference, owner, patient, tier, contact_due,
                                           {**common, "accepted_at": _iso(accepted_at), "due": _iso(contact_due)}))
    _reconcile(run.session, existing, wanted, now=run.now)


def _referral_wanted(run: _Sync, kind: str, source: str, recipient: str, patient: str | None, tier: str | None,
                     due: datetime, payload: dict, *, lead: bool = True) -> Wanted:
    prefs = run.preferences(recipient)
    moment = timing.add_days(due, -run.policy.lead(tier), tz=prefs.zone) if lead else due
    moment = timing.out_of_quiet_hours(moment, tz=prefs.zone, start=prefs.quiet_start, end=prefs.quiet_end)
    return Wanted(key=f"{kind}|{source}|{_stamp(due)}", kind=kind, source=source, recipient=recipient,
                  patient=patient, tier=tier, due_at=moment, payload=payload)


def _known(rows: list[Reminder], kind: str, name: str) -> datetime | None:
    # The moment a referral was sent or accepted is fixed by the first reminder that saw it.
    values = sorted(r.payload[name] for r in rows if r.kind == kind and (r.payload or {}).get(name))
    return timing.utc(datetime.fromisoformat(values[0])) if values else None


def _parse_or(text: object, zone: ZoneInfo) -> datetime | None:
    return _parse(text, zone) if isinstance(text, str) else None


def _mark_done(rows: list[Reminder], kinds: tuple[str, ...], now: datetime) -> None:
    for row in rows:
        if row.kind in kinds and row.done_at is None and row.state != "cancelled":
            row.done_at = now


def _task_practice(session: Session, task: dict) -> str | None:
    canonical = task.get("instantiatesCanonical")
    if isinstance(canonical, str):
        return canonical
    activity_id = next((e.get("valueString") for e in task.get("extension") or []
                        if isinstance(e, dict) and e.get("url") == ACTIVITY_ID_EXTENSION), None)
    for based_on in task.get("basedOn") or []:
        target = (based_on or {}).get("reference") or ""
        if target.startswith("CarePlan/") and activity_id:
            plan = _content(session, "CarePlan", target.split("/", 1)[1]) or {}
            for activity in plan.get("activity") or []:
                if isinstance(activity, dict) and activity.get("id") == activity_id:
                    return ((activity.get("detail") or {}).get("instantiatesCanonical") or [None])[0]
    return None


def _business_days(start: datetime, days: int, zone: ZoneInfo) -> datetime:
    from careplan.referrals.sla import add_business_days  # the same calendar for service levels and reminders

    return timing.utc(add_business_days(start, days, tz=zone.key, holidays=_holidays()))


def _holidays() -> frozenset[date]:
    found = set()
    for text in (os.environ.get("CAREPLAN_HOLIDAYS") or "").split(","):
        try:
            found.add(date.fromisoformat(text.strip()))
        except ValueError:
            continue
    return frozenset(found)


def _env_int(name: str, default: int) -> int:
    try:
        return max(int(os.environ.get(name) or default), 0)
    except ValueError:
        return default


# -- digests and roll-forward -------------------------------------------------------------------------------------


DIGEST_KINDS = ("follow-up", "follow-up-escalation", "goal-review", "plan-review", *REFERRAL_KINDS)
DIGEST_HORIZON = timedelta(hours=26)  # a recipient's local day ends within 25 h (a DST day) of any moment


def digest_recipients(session: Session, now: datetime) -> list[str]:
    """Return the recipients with something for today's digest: open reminders due by the end of their day, or
    sent ones not yet done (overdue).

    Both reads are index-driven, so the pass stays flat as history grows: open rows through the due index bounded
    by the horizon, sent and not-done ones through ``ix_reminder_overdue`` (a partial index that done history
    leaves). A recipient whose reminders all fall due later gets no digest (there would be nothing in it).
    """
    due_soon = select(Reminder.recipient).where(
        Reminder.state.in_(REMINDER_OPEN), Reminder.due_at <= timing.utc(now) + DIGEST_HORIZON,
        Reminder.kind.in_(DIGEST_KINDS), Reminder.done_at.is_(None))
    # The predicates repeat ix_reminder_overdue's WHERE clause word for word, so the planner can use it.
    overdue = select(Reminder.recipient).where(sql_text(OVERDUE_WHERE), Reminder.kind.in_(DIGEST_KINDS))
    return sorted(set(session.scalars(due_soon.distinct())) | set(session.scalars(overdue.distinct())))


def _schedule_digests(session: Session, now: datetime) -> int:
    recipients = digest_recipients(session, now)
    policy = reminder_policy.current()
    stored = {}
    for chunk in _chunks(recipients, 500):  # a few queries per tick, however many recipients
        stored.update((row.recipient, row) for row in session.scalars(
            select(RecipientPreference).where(RecipientPreference.recipient.in_(chunk))))
    wanted = {}
    for recipient in recipients:
        row = stored.get(recipient)
        if row is not None:
            zone = timing.zone(row.timezone, default=policy.default_timezone)
            clock = _hhmm(row.digest_time) or policy.digest_time
        elif recipient.startswith("Organization/"):
            prefs = preferences_of(session, recipient, policy=policy)  # an agency's own time zone extension
            zone, clock = prefs.zone, prefs.digest_time
        else:
            zone, clock = timing.zone(policy.default_timezone), policy.digest_time
        day, moment = timing.latest_daily(now, clock, tz=zone)
        wanted[f"digest|{recipient}|{day.isoformat()}"] = (recipient, day, moment, zone)
    existing = set()
    for chunk in _chunks(sorted(wanted), 500):
        existing.update(session.scalars(select(Reminder.key).where(Reminder.key.in_(chunk))))
    created = 0
    for key, (recipient, day, moment, zone) in wanted.items():
        if key in existing:
            continue
        created += insert_ignore(session, {
            "key": key, "kind": "digest", "source": recipient, "recipient": recipient, "patient": None, "tier": None,
            "due_at": moment, "state": "scheduled", "payload": {"date": day.isoformat(), "timezone": zone.key},
            "created_at": now, "updated_at": now})
    return created


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _roll_plan_reviews(session: Session, now: datetime) -> int:
    # A sent plan review has a successor once the plan is written again; an untouched active plan gets it here.
    window = now - timedelta(days=2 * reminder_policy.current().plan_review_days)
    sent = session.execute(select(Reminder.source).where(
        Reminder.kind == "plan-review", Reminder.state.in_(("claimed", "sent")), Reminder.due_at >= window
    ).distinct()).all()
    created = 0
    for (source,) in sent:
        waiting = session.scalar(select(Reminder.id).where(Reminder.kind == "plan-review", Reminder.source == source,
                                                           Reminder.state == "scheduled").limit(1))
        if waiting is not None:
            continue
        plan = _content(session, "CarePlan", source.split("/", 1)[1])
        if plan is None or plan.get("status") != "active":
            continue
        before = session.scalar(select(Reminder.id).order_by(Reminder.id.desc()).limit(1))
        _sync_care_plan(_Sync(session, now), plan["id"], plan)
        session.flush()
        after = session.scalar(select(Reminder.id).order_by(Reminder.id.desc()).limit(1))
        created += int(after != before)
    return created


def insert_ignore(session: Session, values: dict) -> int:
    """Insert a reminder row unless its key exists (another worker or an earlier run made it); return 1 or 0."""
    dialect = session.get_bind().dialect.name
    statement = (postgresql.insert(Reminder) if dialect == "postgresql" else sqlite.insert(Reminder)).values(
        **values).on_conflict_do_nothing(index_elements=["key"]).returning(Reminder.id)
    return int(session.execute(statement).first() is not None)


# -- reconciling -----------------------------------------------------------------------------------------------


def _reconcile(session: Session, existing: list[Reminder], wanted: list[Wanted], *, now: datetime) -> None:
    by_key = {row.key: row for row in existing}
    for item in wanted:
        row = by_key.get(item.key)
        if row is None:
            row = session.scalar(select(Reminder).where(Reminder.key == item.key))
        if row is None:
            session.add(Reminder(key=item.key, kind=item.kind, source=item.source, recipient=item.recipient,
                                 patient=item.patient, tier=item.tier, due_at=item.due_at, state="scheduled",
                                 payload=item.payload, created_at=now, updated_at=now))
            continue
        by_key.setdefault(item.key, row)
        if row.state == "cancelled" and row.done_at is None:
            row.state = "scheduled"  # wanted again (a plan back from on-hold): the same occurrence, revived
            row.updated_at = now
        if row.state != "scheduled":
            continue  # claimed or sent: the scheduler owns it now
        changes = {"due_at": item.due_at, "recipient": item.recipient, "tier": item.tier, "patient": item.patient,
                   "payload": item.payload}
        changed = False
        for name, value in changes.items():
            if getattr(row, name) != value:
                setattr(row, name, value)
                changed = True
        if changed:
            row.updated_at = now
    keep = {item.key for item in wanted}
    for row in by_key.values():
        if row.key not in keep and row.state == "scheduled":
            row.state = "cancelled"
            row.updated_at = now


# -- small helpers ---------------------------------------------------------------------------------------------


def _content(session: Session, resource_type: str, resource_id: str) -> dict | None:
    # Trusted internal read: a reminder's recipient does not depend on what the writing caller may see.
    row = session.scalar(select(Resource).where(and_(Resource.res_type == resource_type,
                                                     Resource.res_id == resource_id)))
    if row is None or row.deleted or not isinstance(row.content, dict):
        return None
    return row.content


def _stamp(moment: datetime) -> str:
    return timing.utc(moment).strftime("%Y%m%dT%H%M%SZ")


def _iso(moment: datetime) -> str:
    return timing.utc(moment).isoformat()
