"""Evaluate the measures of careplan.measures.definitions per week or month, overall and by equity stratum.

Each measure collects its members (patients, referrals, reminders, activities, discharges) once per evaluation
with a few SQL queries over the search index and the version table, then buckets them into periods by their event
date. Aggregates count everyone in the programme whoever asks (they are de-identified and small cells are
suppressed); the drill-down (``visible_members``) lists people for callers allowed to see them, reading each one
through the policy-enforcing store as the caller.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, aliased

from careplan.coordination import codes
from careplan.coordination.errors import NotFound, RuleViolation
from careplan.db import Database
from careplan.measures import strata
from careplan.measures.definitions import BY_ID, CONTINUOUS, DEFINITIONS, MeasureDefinition
from careplan.measures.periods import (
    PERIODS,
    end_of_day,
    parse_date,
    parse_instant,
    periods_between,
    start_of_day,
)
from careplan.models import Resource, ResourceVersion, SearchDate, SearchReference, SearchToken, utcnow
from careplan.practices.tiers import tier_of
from careplan.referrals import sla

FINAL = frozenset({"completed", "failed", "rejected", "cancelled", "entered-in-error"})
CLOSED_WITH_OUTCOME = frozenset({"completed", "failed", "rejected", "cancelled"})
OUTCOME_SYSTEM = f"{codes.BASE}/CodeSystem/referral-outcome"
ACTIVE_ACTIVITY = frozenset({"not-started", "scheduled", "in-progress", "on-hold"})
INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})
NOT_FOLLOW_UP = INPATIENT | {"EMER", "OBSENC"}
SNOMED = "http://snomed.info/sct"
# Mental disorder, substance abuse and common children (a terminology server would expand the hierarchy).
MHA_SNOMED = frozenset({"74732009", "66214007", "35489007", "58214004", "13746004", "197480006", "7200002",
                        "191816009", "69322001", "47505003", "44376007"})
CLOSE_LOOP_DAYS = 30
PLAN_DAYS = 30
FOLLOW_UP_DAYS = 7
MAX_VERSIONS_PER_QUERY = 500


@dataclass(frozen=True)
class Point:
    """One period of a measure; counts and value are None when suppressed (value None also when nothing to count)."""

    period_start: date
    period_end: date
    numerator: int | None
    denominator: int | None
    value: float | None  # a proportion 0-1, or the median in the measure's unit
    suppressed: bool = False


@dataclass(frozen=True)
class Result:
    """A measure evaluated over consecutive periods, overall and (when asked) by stratum."""

    measure: MeasureDefinition
    kind: str
    period: str
    start: date
    end: date
    points: list[Point]
    stratifier: str | None = None
    strata: dict[str, list[Point]] = field(default_factory=dict)
    evaluated_at: datetime | None = None


@dataclass(frozen=True)
class Member:
    """One person, referral, reminder, activity or discharge a measure counted (or excluded, with the reason)."""

    reference: str  # what is counted: Patient/x, Task/y, Encounter/z, CarePlan/p#activity, reminder key
    patient: str | None  # the patient's id
    event: date  # places the member in a period
    in_numerator: bool = False
    value: float | None = None  # days, for continuous measures
    tier: str | None = None
    excluded: str | None = None  # why it is not in the denominator


@dataclass
class _Context:
    session: Session
    definition: MeasureDefinition
    periods: list[tuple[date, date]]
    window_start: datetime
    window_end: datetime  # exclusive
    now: datetime
    settings: object


def list_measures() -> list[MeasureDefinition]:
    """Return every measure's definition, in the issue's order."""
    return list(DEFINITIONS)


def definition(measure_id: str) -> MeasureDefinition:
    """Return a measure's definition or raise NotFound."""
    found = BY_ID.get(measure_id)
    if found is None:
        raise NotFound(f"No measure {measure_id[:80]!r}; GET /api/v1/measures lists them")
    return found


def stratifiers_for(measure: MeasureDefinition) -> list[str]:
    """Return the stratifiers a measure can be broken down by."""
    return [s.id for s in strata.STRATIFIERS if not s.member_level or measure.subject in ("reminder", "activity")]


def evaluate(db: Database, *, measure_id: str, period: str = "month", start: date, end: date,
             stratifier: str | None = None, now: datetime | None = None, settings=None) -> Result:
    """Evaluate one measure for every period from the one containing start to the one containing end.

    period "range" (used by FHIR $evaluate-measure) is the single period start..end.
    """
    overall, by_stratifier = evaluate_strata(db, measure_id=measure_id, period=period, start=start, end=end,
                                             stratifiers=[stratifier] if stratifier else [], now=now,
                                             settings=settings)
    return by_stratifier[stratifier] if stratifier else overall


def evaluate_strata(db: Database, *, measure_id: str, period: str = "month", start: date, end: date,
                    stratifiers: list[str], now: datetime | None = None,
                    settings=None) -> tuple[Result, dict[str, Result]]:
    """Evaluate a measure once and break it down by each of several stratifiers; return (overall, by stratifier)."""
    measure = definition(measure_id)
    periods = _periods(period, start, end)
    for stratifier in stratifiers:
        if stratifier not in stratifiers_for(measure):
            raise RuleViolation(f"Unknown stratifier {stratifier[:40]!r} for {measure.id}; use one of "
                                f"{', '.join(stratifiers_for(measure))}", errors={"stratifier": ["unknown"]},
                                location="query")
    moment = now or utcnow()
    with db.reading() as session:
        context = _Context(session, measure, periods, start_of_day(periods[0][0]), end_of_day(periods[-1][1]),
                           moment, settings)
        collected = [m for m in COLLECTORS[measure.id](context) if m.excluded is None]
        facts = strata.load_facts(session, {m.patient for m in collected if m.patient}) if stratifiers else {}
    by_period = _bucket(collected, periods)
    common = {"measure": measure, "kind": measure.kind, "period": period, "start": start, "end": end,
              "evaluated_at": moment}
    overall = Result(points=_tabulate(measure, periods, by_period, None, facts)[0], **common)
    results = {}
    for stratifier in stratifiers:
        points, cells = _tabulate(measure, periods, by_period, stratifier, facts)
        results[stratifier] = Result(points=points, stratifier=stratifier, strata=cells, **common)
    return overall, results


def _tabulate(measure: MeasureDefinition, periods: list[tuple[date, date]], by_period: list[list[Member]],
              stratifier: str | None, facts: dict) -> tuple[list[Point], dict[str, list[Point]]]:
    points: list[Point] = []
    cells_by_period: list[dict[str, Point]] = []
    for (first, last), chosen in zip(periods, by_period):
        total = _point(measure, first, last, chosen, len(chosen))
        cells: dict[str, Point] = {}
        if stratifier:
            groups: dict[str, list[Member]] = {}
            for member in chosen:
                key = strata.value_of(stratifier, facts.get(member.patient or ""), on=member.event, tier=member.tier)
                groups.setdefault(key, []).append(member)
            for key, group in groups.items():
                if measure.id == "practice-adoption" and stratifier == "tier":
                    # share of each tier among all activities: the stratum's own count over the whole denominator
                    cells[key] = _share(first, last, len(group), len(chosen))
                else:
                    cells[key] = _point(measure, first, last, group, len(group))
        total_hidden, hidden = strata.suppressed_cells(
            (total.numerator, total.denominator), {k: (c.numerator, c.denominator) for k, c in cells.items()})
        points.append(_hide(total) if total_hidden else total)
        cells_by_period.append({k: (_hide(c) if k in hidden else c) for k, c in cells.items()})
    result_strata: dict[str, list[Point]] = {}
    keys = sorted({k for cells in cells_by_period for k in cells}, key=lambda k: (k == strata.UNKNOWN, k))
    for key in keys:
        result_strata[key] = [cells.get(key) or Point(first, last, _zero(measure), 0, None)
                              for (first, last), cells in zip(periods, cells_by_period)]
    return points, result_strata


def members(db: Database, *, measure_id: str, period: str = "month", period_start: date,
            period_end: date | None = None, now: datetime | None = None, settings=None) -> dict:
    """Return the members of one period: denominator, numerator and excluded (with reasons), unsuppressed.

    For callers allowed to see the people: the web layer filters each reference through the store's policy.
    """
    measure = definition(measure_id)
    (first, last), = _periods(period, period_start, period_end if period == "range" else period_start)
    moment = now or utcnow()
    with db.reading() as session:
        context = _Context(session, measure, [(first, last)], start_of_day(first), end_of_day(last), moment,
                           settings)
        collected = [m for m in COLLECTORS[measure.id](context) if first <= m.event <= last]
    denominator = [m for m in collected if m.excluded is None]
    return {"measure": measure, "period_start": first, "period_end": last,
            "denominator": denominator, "numerator": [m for m in denominator if m.in_numerator],
            "excluded": [m for m in collected if m.excluded is not None]}


def visible_members(db: Database, *, measure_id: str, period: str = "month", period_start: date,
                    period_end: date | None = None, now: datetime | None = None, settings=None) -> dict:
    """Return the members of one period the current caller may see, each read through the policy-enforcing store.

    Every member shown is read as the caller (so the read is audited and consent applies); a member whose record
    or patient the caller may not see is left out and only counted in ``hidden``.
    """
    from careplan import errors as fhir_errors
    from careplan.store import service

    found = members(db, measure_id=measure_id, period=period, period_start=period_start, period_end=period_end,
                    now=now, settings=settings)
    seen: dict[str, bool] = {}
    hidden: set[str] = set()
    result = dict(found)
    with db.reading() as session:
        def visible(reference: str | None) -> bool:
            if reference is None:
                return True
            if reference not in seen:
                resource_type, _, resource_id = reference.partition("#")[0].partition("/")
                try:
                    service.read_in(session, resource_type=resource_type, resource_id=resource_id)
                    seen[reference] = True
                except fhir_errors.FhirError:
                    seen[reference] = False
            return seen[reference]

        for part in ("denominator", "numerator", "excluded"):
            kept = []
            for member in found[part]:
                patient = f"Patient/{member.patient}" if member.patient else None
                subject = member.reference if "/" in member.reference else None
                if (subject or patient) and visible(subject) and visible(patient):
                    kept.append(member)
                else:
                    hidden.add(member.reference)
            result[part] = kept
    result["hidden"] = len(hidden)
    return result


def _periods(period: str, start: date, end: date) -> list[tuple[date, date]]:
    if period == "range":
        if end < start:
            raise RuleViolation("periodEnd is before periodStart", errors={"end": ["before start"]},
                                location="query")
        return [(start, end)]
    if period not in PERIODS:
        raise RuleViolation(f"period must be one of {', '.join(PERIODS)}", errors={"period": ["week or month"]},
                            location="query")
    try:
        return periods_between(period, start, end)
    except (ValueError, OverflowError) as error:
        raise RuleViolation(str(error), errors={"end": [str(error)]}, location="query") from None


def _bucket(members_: list[Member], periods: list[tuple[date, date]]) -> list[list[Member]]:
    result: list[list[Member]] = [[] for _ in periods]
    starts = [first for first, _ in periods]
    for member in members_:
        for index in range(len(periods) - 1, -1, -1):
            if starts[index] <= member.event <= periods[index][1]:
                result[index].append(member)
                break
    return result


def _zero(measure: MeasureDefinition) -> int | None:
    return None if measure.kind == CONTINUOUS else 0


def point_of(measure: MeasureDefinition, first: date, last: date, chosen: list[Member]) -> Point:
    """Return the unsuppressed point of members (all in the denominator)."""
    return _point(measure, first, last, chosen, len(chosen))


def _point(measure: MeasureDefinition, first: date, last: date, chosen: list[Member], size: int) -> Point:
    if measure.kind == CONTINUOUS:
        values = [m.value for m in chosen if m.value is not None]
        median = round(statistics.median(values), 1) if values else None
        return Point(first, last, None, size, median)
    numerator = sum(1 for m in chosen if m.in_numerator)
    return _share(first, last, numerator, size)


def _share(first: date, last: date, numerator: int, denominator: int) -> Point:
    return Point(first, last, numerator, denominator, round(numerator / denominator, 4) if denominator else None)


def _hide(point: Point) -> Point:
    return replace(point, numerator=None, denominator=None, value=None, suppressed=True)


# -- shared loading ------------------------------------------------------------------------------------------------


def _token(resource_type: str, param: str, code_values: Iterable[str], system: str | None = None):
    condition = and_(SearchToken.resource_pk == Resource.pk, SearchToken.res_type == resource_type,
                     SearchToken.param == param, SearchToken.code.in_(sorted(set(code_values))))
    if system is not None:
        condition = and_(condition, SearchToken.system == system)
    return exists().where(condition).correlate(Resource)


def _refers(resource_type: str, params: Iterable[str], target_type: str, ids: Iterable[str] | None = None):
    condition = and_(SearchReference.resource_pk == Resource.pk, SearchReference.res_type == resource_type,
                     SearchReference.param.in_(sorted(set(params))), SearchReference.target_type == target_type)
    if ids is not None:
        condition = and_(condition, SearchReference.target_id.in_(sorted(set(ids))))
    return exists().where(condition).correlate(Resource)


def _current(session: Session, resource_type: str, *conditions) -> list[dict]:
    return list(session.scalars(select(Resource.content).where(
        Resource.res_type == resource_type, Resource.deleted.is_(False), *conditions)))


def _versions(session: Session, resource_type: str, *conditions) -> dict[str, list[tuple[datetime, dict | None]]]:
    """Return (time, content or None when deleted) of every version of the matching resources, oldest first."""
    pks = select(Resource.pk).where(Resource.res_type == resource_type, *conditions)
    rows = session.execute(
        select(ResourceVersion.res_id, ResourceVersion.last_updated, ResourceVersion.content)
        .where(ResourceVersion.resource_pk.in_(pks))
        .order_by(ResourceVersion.res_id, ResourceVersion.version_id))
    result: dict[str, list[tuple[datetime, dict | None]]] = {}
    for res_id, when, content in rows:
        result.setdefault(res_id, []).append((when, content))
    return result


def _chunks(items: list[str], size: int = MAX_VERSIONS_PER_QUERY) -> Iterable[list[str]]:
    for index in range(0, len(items), size):
        yield items[index:index + size]


def _id(reference: str | None, resource_type: str) -> str | None:
    if isinstance(reference, str) and reference.startswith(resource_type + "/"):
        return reference.split("/", 1)[1]
    return None


def _as_of(versions: list[tuple[datetime, dict | None]], moment: datetime) -> dict | None:
    """Return the content current just before moment (None before the first version or when deleted)."""
    index = bisect_left(versions, moment, key=lambda version: version[0])
    return versions[index - 1][1] if index else None


def _deceased_by(patient: dict | None, deadline: datetime) -> bool:
    if not patient:
        return False
    if patient.get("deceasedBoolean") is True:
        return True
    died = parse_instant(patient.get("deceasedDateTime"))
    return died is not None and died < deadline


def _patients(session: Session, ids: Iterable[str]) -> dict[str, dict]:
    result: dict[str, dict] = {}
    for chunk in _chunks(sorted(set(ids))):
        for content in _current(session, "Patient", Resource.res_id.in_(chunk)):
            result[content["id"]] = content
    return result


# -- measures 1 and 2: identification to an active coordinated care plan ------------------------------------------


def _identified_on(episode: dict) -> date | None:
    for extension in episode.get("extension", []):
        if extension.get("url") == codes.IDENTIFICATION_EXTENSION:
            for detail in extension.get("extension", []):
                if detail.get("url") == "identifiedOn":
                    return parse_date(detail.get("valueDate"))
    return parse_date((episode.get("period") or {}).get("start"))


def _identifications(context: _Context) -> list[tuple[dict, date, str]]:
    episodes = _current(context.session, "EpisodeOfCare",
                        _token("EpisodeOfCare", "type", [codes.EPISODE_TYPE_CODE], codes.EPISODE_TYPE_SYSTEM))
    result = []
    for episode in episodes:
        identified = _identified_on(episode)
        patient = _id((episode.get("patient") or {}).get("reference"), "Patient")
        if identified and patient and context.periods[0][0] <= identified <= context.periods[-1][1]:
            result.append((episode, identified, patient))
    return result


def _plan_ready_times(session: Session, patient_ids: list[str]) -> dict[str, datetime]:
    """Return, per patient, the first moment a coordinated plan was active with a goal and a team of two or more."""
    plans: dict[str, list[tuple[datetime, dict | None]]] = {}
    for chunk in _chunks(patient_ids):
        plans.update(_versions(session, "CarePlan",
                               _token("CarePlan", "category", [codes.COORDINATED_CARE_PLAN],
                                      codes.CARE_PLAN_CATEGORY_SYSTEM),
                               _refers("CarePlan", ["subject"], "Patient", chunk)))
    team_ids = {team for versions in plans.values() for _, content in versions if content
                for team in (_id(r.get("reference"), "CareTeam") for r in content.get("careTeam", [])) if team}
    teams: dict[str, list[tuple[datetime, dict | None]]] = {}
    for chunk in _chunks(sorted(team_ids)):
        teams.update(_versions(session, "CareTeam", Resource.res_id.in_(chunk)))
    ready: dict[str, datetime] = {}
    for versions in plans.values():
        refs = {team for _, content in versions if content
                for team in (_id(r.get("reference"), "CareTeam") for r in content.get("careTeam", [])) if team}
        moments = sorted({when for when, _ in versions} | {when for t in refs for when, _ in teams.get(t, [])})
        for moment in moments:
            plan = _as_of(versions, moment + timedelta(microseconds=1))
            if not _plan_qualifies(plan, teams, moment):
                continue
            patient = _id(plan["subject"].get("reference"), "Patient")
            if patient and (patient not in ready or moment < ready[patient]):
                ready[patient] = moment
            break
    return ready


def _plan_qualifies(plan: dict | None, teams: dict[str, list[tuple[datetime, dict | None]]],
                    moment: datetime) -> bool:
    if not plan or plan.get("status") != "active" or not plan.get("goal"):
        return False
    for reference in plan.get("careTeam", []):
        team_id = _id(reference.get("reference"), "CareTeam")
        team = _as_of(teams.get(team_id or "", []), moment + timedelta(microseconds=1))
        if team and len(team.get("participant", [])) >= 2:
            return True
    return False


def _ccp_members(context: _Context, *, continuous: bool) -> list[Member]:
    found = _identifications(context)
    patient_ids = sorted({patient for _, _, patient in found})
    ready = _plan_ready_times(context.session, patient_ids)
    patients = _patients(context.session, patient_ids)
    result = []
    for episode, identified, patient in found:
        reference = f"Patient/{patient}"
        deadline = end_of_day(identified + timedelta(days=PLAN_DAYS))
        ready_at = ready.get(patient)
        days = max(0, (ready_at.date() - identified).days) if ready_at else None
        excluded = None
        if episode.get("status") in ("cancelled", "entered-in-error"):
            excluded = f"episode {episode['status']}"
        elif not continuous and _deceased_by(patients.get(patient), deadline):
            excluded = "died within 30 days of identification"
        if continuous:
            if excluded is None and ready_at is None:
                excluded = "no active coordinated care plan yet"
            result.append(Member(reference, patient, identified, value=float(days) if days is not None else None,
                                 excluded=excluded))
            continue
        in_numerator = ready_at is not None and ready_at < deadline
        if excluded is None and not in_numerator and context.now < deadline:
            excluded = "not yet assessable: the 30 days have not passed"
        result.append(Member(reference, patient, identified, in_numerator=in_numerator, excluded=excluded))
    return result


# -- measures 3 to 6: referrals ------------------------------------------------------------------------------------


def _sla_settings(settings) -> tuple[int, str, frozenset[date]]:
    if settings is None:
        from careplan import config

        settings = config.from_env()
    days = getattr(settings, "sla_response_business_days", 2)
    default_tz = getattr(settings, "default_timezone", sla.DEFAULT_TIMEZONE)
    return int(days), str(default_tz), frozenset(getattr(settings, "holidays", frozenset()))


@dataclass(frozen=True)
class _Referral:
    task: dict  # current version
    versions: list[dict]
    milestones: sla.Milestones
    patient: str | None


def _referrals(context: _Context) -> list[_Referral]:
    session = context.session
    written = aliased(ResourceVersion)
    in_window = exists().where(written.resource_pk == Resource.pk, written.last_updated >= context.window_start,
                               written.last_updated < context.window_end).correlate(Resource)
    versions = _versions(session, "Task", Resource.deleted.is_(False), _token("Task", "intent", ["order"]),
                         _refers("Task", ["owner"], "Organization"), _refers("Task", ["focus"], "ServiceRequest"),
                         in_window)
    result = []
    for task_versions in versions.values():
        contents = [content for _, content in task_versions if content is not None]
        if not contents:
            continue
        current = contents[-1]
        milestones = sla.milestones(contents)
        sent = milestones.sent_at
        if sent is None or not (context.window_start <= sent < context.window_end):
            continue
        patient = _id((current.get("for") or {}).get("reference"), "Patient")
        result.append(_Referral(current, contents, milestones, patient))
    return result


def _sent_on(referral: _Referral) -> date:
    return referral.milestones.sent_at.astimezone(timezone.utc).date()


def _reference(referral: _Referral) -> str:
    return f"Task/{referral.task['id']}"


def _in_error(referral: _Referral) -> str | None:
    return "entered in error" if referral.task.get("status") == "entered-in-error" else None


def _response_members(context: _Context) -> list[Member]:
    referrals = _referrals(context)
    days, default_tz, holidays = _sla_settings(context.settings)
    owners = {_id((r.task.get("owner") or {}).get("reference"), "Organization") for r in referrals}
    zones = {org["id"]: sla.timezone_of(org, default=default_tz)
             for org in _current(context.session, "Organization", Resource.res_id.in_(sorted(o for o in owners if o)))}
    result = []
    for referral in referrals:
        milestones = referral.milestones
        owner = _id((referral.task.get("owner") or {}).get("reference"), "Organization")
        due = sla.add_business_days(milestones.sent_at, days, tz=zones.get(owner or "") or default_tz,
                                    holidays=holidays)
        responded = milestones.responded_at
        excluded = _in_error(referral)
        withdrawn = (responded is None and milestones.closed_at is not None and referral.task.get("status")
                     == "cancelled" and milestones.closed_at <= due)
        if excluded is None and withdrawn:
            excluded = "withdrawn before a response was due"
        if excluded is None and responded is None and context.now <= due:
            excluded = "not yet assessable: the response is not due yet"
        result.append(Member(_reference(referral), referral.patient, _sent_on(referral),
                             in_numerator=responded is not None and responded <= due, excluded=excluded))
    return result


def _closed_loop_members(context: _Context) -> list[Member]:
    result = []
    for referral in _referrals(context):
        milestones = referral.milestones
        deadline = milestones.sent_at + timedelta(days=CLOSE_LOOP_DAYS)
        closing = _closing_version(referral)
        in_numerator = (closing is not None and milestones.closed_at is not None and milestones.closed_at <= deadline
                        and closing.get("status") in CLOSED_WITH_OUTCOME
                        and bool(closing.get("statusReason") or closing.get("output")))
        excluded = _in_error(referral)
        if excluded is None and not in_numerator and milestones.closed_at is None and context.now <= deadline:
            excluded = "not yet assessable: open and sent less than 30 days ago"
        result.append(Member(_reference(referral), referral.patient, _sent_on(referral), in_numerator=in_numerator,
                             excluded=excluded))
    return result


def _closing_version(referral: _Referral) -> dict | None:
    # The first final version: the workflow lets a final referral change only to entered-in-error.
    return next((version for version in referral.versions if version.get("status") in FINAL), None)


def got_help(task: dict) -> bool:
    """Tell whether a completed referral's outputs show the service was received."""
    if task.get("status") != "completed":
        return False
    for output in task.get("output", []):
        concept = output.get("valueCodeableConcept") or {}
        if any(c.get("code") == "got-help" and c.get("system") in (OUTCOME_SYSTEM, None)
               for c in concept.get("coding", [])):
            return True
        if (output.get("valueReference") or {}).get("reference", "").startswith("Procedure/"):
            return True
    return False


def _got_help_members(context: _Context) -> list[Member]:
    return [Member(_reference(r), r.patient, _sent_on(r), in_numerator=got_help(r.task), excluded=_in_error(r))
            for r in _referrals(context)]


def _contact_members(context: _Context) -> list[Member]:
    result = []
    for referral in _referrals(context):
        milestones = referral.milestones
        contact = milestones.first_contact_at
        excluded = _in_error(referral) or (None if contact else "no first contact yet")
        days = round((contact - milestones.sent_at).total_seconds() / 86400, 1) if contact else None
        result.append(Member(_reference(referral), referral.patient, _sent_on(referral), value=days,
                             excluded=excluded))
    return result


# -- measure 7: follow-up reminders -------------------------------------------------------------------------------


REMINDER_QUIET_SLACK = timedelta(days=1)  # quiet hours move a reminder at most to the next local morning


def _reminder_lead_days(settings) -> tuple[float, ...]:
    if settings is None:
        from careplan import config

        settings = config.from_env()
    return tuple(getattr(settings, "reminder_lead_days", ()) or ())


def _reminder_members(context: _Context) -> list[Member]:
    from careplan.reminders.models import Reminder

    # due_at is when the reminder goes out: the tier's lead time before the follow-up is due, or later when quiet
    # hours hold it back. Members are placed by the due moment, so look that far either side of the window.
    lead = timedelta(days=max(_reminder_lead_days(context.settings), default=0.0))
    rows = context.session.execute(select(Reminder.key, Reminder.source, Reminder.patient, Reminder.tier,
                                          Reminder.due_at, Reminder.done_at, Reminder.state, Reminder.payload).where(
        Reminder.kind == "follow-up", Reminder.due_at >= context.window_start - lead - REMINDER_QUIET_SLACK,
        Reminder.due_at < context.window_end + REMINDER_QUIET_SLACK))
    result = []
    for key, source, patient, tier, due_at, done_at, state, payload in rows:
        if (payload or {}).get("due"):
            due_at = datetime.fromisoformat(payload["due"]).astimezone(timezone.utc)
        if not context.window_start <= due_at < context.window_end:
            continue
        excluded = None
        # A follow-up done before its reminder went out cancels the reminder with done_at set: that one counts.
        if state == "cancelled" and done_at is None:
            excluded = "cancelled"
        elif done_at is None and due_at >= context.now:
            excluded = "not yet assessable: not due yet"
        result.append(Member(source or key, _id(patient, "Patient"), due_at.astimezone(timezone.utc).date(),
                             in_numerator=done_at is not None and done_at <= due_at, tier=tier, excluded=excluded))
    return result


# -- measure 8: practice adoption ---------------------------------------------------------------------------------


def _tiers_by_url(session: Session) -> dict[str, str | None]:
    return {content.get("url"): tier_of(content) for content in _current(session, "PlanDefinition")
            if content.get("url")}


def _adoption_members(context: _Context) -> list[Member]:
    session = context.session
    written = aliased(ResourceVersion)
    plans = _versions(session, "CarePlan", _token("CarePlan", "category", [codes.COORDINATED_CARE_PLAN],
                                                  codes.CARE_PLAN_CATEGORY_SYSTEM),
                      exists().where(written.resource_pk == Resource.pk,
                                     written.last_updated < context.window_end).correlate(Resource))
    tiers = _tiers_by_url(session)
    result = []
    for first, last in context.periods:
        moment = end_of_day(last)
        for versions in plans.values():
            plan = _as_of(versions, moment)
            if not plan or plan.get("status") != "active":
                continue
            patient = _id((plan.get("subject") or {}).get("reference"), "Patient")
            for index, activity in enumerate(plan.get("activity", [])):
                detail = activity.get("detail") or {}
                if detail.get("status") not in ACTIVE_ACTIVITY:
                    continue
                canonical = next(iter(detail.get("instantiatesCanonical") or []), None)
                tier = tiers.get(canonical.partition("|")[0]) if canonical else None
                result.append(Member(f"CarePlan/{plan['id']}#{activity.get('id') or index}", patient, last,
                                     in_numerator=tier == "recommended", tier=tier))
    return result


# -- measure 9: seven-day follow-up after a mental-health or addictions hospitalisation ----------------------------


def is_mha_code(coding: dict) -> bool:
    """Tell whether a coding names a mental-health, substance-use or self-harm condition."""
    system = (coding.get("system") or "").lower()
    code = (coding.get("code") or "").upper()
    if "icd-10" in system or "icd10" in system:
        if code.startswith("F"):
            return True
        return code.startswith("X") and code[1:3].isdigit() and 60 <= int(code[1:3]) <= 84
    return system == SNOMED and code in MHA_SNOMED


def _mha(encounter: dict, conditions: dict[str, dict]) -> bool:
    concepts = list(encounter.get("reasonCode", []))
    references = [r.get("reference") for r in encounter.get("reasonReference", [])]
    references += [(d.get("condition") or {}).get("reference") for d in encounter.get("diagnosis", [])]
    for reference in references:
        condition = conditions.get(_id(reference, "Condition") or "")
        if condition:
            concepts.append(condition.get("code") or {})
    return any(is_mha_code(c) for concept in concepts for c in concept.get("coding", []))


def _class_code(encounter: dict) -> str | None:
    return (encounter.get("class") or {}).get("code")


def _hospitalisation_members(context: _Context) -> list[Member]:
    session = context.session
    # the stay's period overlaps the window (its end, the discharge, is checked below)
    overlaps = exists().where(SearchDate.resource_pk == Resource.pk, SearchDate.res_type == "Encounter",
                              SearchDate.param == "date", SearchDate.high >= context.window_start,
                              SearchDate.low < context.window_end).correlate(Resource)
    inpatient = [e for e in _current(session, "Encounter", _token("Encounter", "class", INPATIENT),
                                     _token("Encounter", "status", ["finished"]), overlaps)
                 if (discharged := parse_instant((e.get("period") or {}).get("end")))
                 and context.window_start <= discharged < context.window_end]
    condition_ids = {_id(r, "Condition") for e in inpatient
                     for r in [x.get("reference") for x in e.get("reasonReference", [])]
                     + [(d.get("condition") or {}).get("reference") for d in e.get("diagnosis", [])]}
    conditions = {c["id"]: c for chunk in _chunks(sorted(i for i in condition_ids if i))
                  for c in _current(session, "Condition", Resource.res_id.in_(chunk))}
    index = [e for e in inpatient if _mha(e, conditions)]
    patient_ids = sorted({p for e in index if (p := _id((e.get("subject") or {}).get("reference"), "Patient"))})
    encounters: dict[str, list[dict]] = {}
    messages: dict[str, list[dict]] = {}
    for chunk in _chunks(patient_ids):
        for encounter in _current(session, "Encounter", _refers("Encounter", ["subject"], "Patient", chunk)):
            encounters.setdefault(_id(encounter["subject"]["reference"], "Patient"), []).append(encounter)
        for message in _current(session, "Communication", _token("Communication", "status", ["completed"]),
                                _refers("Communication", ["sender", "recipient"], "Patient", chunk)):
            for patient in _communication_patients(message):
                messages.setdefault(patient, []).append(message)
    patients = _patients(session, patient_ids)
    result = []
    for encounter in index:
        patient = _id(encounter["subject"]["reference"], "Patient")
        discharged = parse_instant(encounter["period"]["end"])
        discharge_day = discharged.date()
        window_start, window_end = end_of_day(discharge_day), end_of_day(discharge_day + timedelta(days=FOLLOW_UP_DAYS))
        followed = any(_follow_up_at(other, window_start, window_end) for other in encounters.get(patient, [])
                       if other["id"] != encounter["id"]) or any(
            window_start <= (parse_instant(m.get("sent")) or datetime.min.replace(tzinfo=timezone.utc)) < window_end
            for m in messages.get(patient, []))
        readmitted = any(_class_code(other) in INPATIENT and other["id"] != encounter["id"]
                         and other.get("status") not in ("cancelled", "entered-in-error")
                         and (admitted := parse_instant((other.get("period") or {}).get("start")))
                         and discharged <= admitted < window_end for other in encounters.get(patient, []))
        excluded = None
        if _deceased_by(patients.get(patient), window_end):
            excluded = "died within 7 days of discharge"
        elif readmitted:
            excluded = "readmitted within 7 days (the later discharge is the index)"
        elif not followed and context.now < window_end:
            excluded = "not yet assessable: discharged less than 7 days ago"
        result.append(Member(f"Encounter/{encounter['id']}", patient, discharge_day, in_numerator=followed,
                             excluded=excluded))
    return result


def _communication_patients(message: dict) -> list[str]:
    # The patient took part (sent or received it): a message merely about the patient is no contact.
    references = [(message.get("sender") or {}).get("reference")]
    references += [r.get("reference") for r in message.get("recipient", [])]
    return [p for p in (_id(r, "Patient") for r in references) if p]


def _follow_up_at(encounter: dict, window_start: datetime, window_end: datetime) -> bool:
    if _class_code(encounter) in NOT_FOLLOW_UP or encounter.get("status") in (
            "planned", "cancelled", "entered-in-error"):
        return False
    started = parse_instant((encounter.get("period") or {}).get("start"))
    return started is not None and window_start <= started < window_end


COLLECTORS: dict[str, Callable[[_Context], list[Member]]] = {
    "ccp-within-30-days": lambda context: _ccp_members(context, continuous=False),
    "days-to-ccp": lambda context: _ccp_members(context, continuous=True),
    "referral-response-within-sla": _response_members,
    "closed-loop-30-days": _closed_loop_members,
    "got-help": _got_help_members,
    "days-to-first-contact": _contact_members,
    "follow-ups-on-time": _reminder_members,
    "practice-adoption": _adoption_members,
    "follow-up-7-days-after-hospitalisation": _hospitalisation_members,
}
