"""Render a reminder as a message: a subject, a plain text and structured data, with references and never names.

A message may travel by e-mail or webhook, outside the careplan's access controls, so it names resources by
reference (the reader opens careplan to see who it is about) and quotes no free text a person typed. A digest lists
the recipient's due and overdue reminders in sections by practice tier: recommended, promising, emerging, then
those tied to no practice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan.models import utcnow
from careplan.practices import catalogue
from careplan.practices.tiers import TIER_ORDER, sort_key
from careplan.reminders import timing
from careplan.reminders.models import Reminder

SUBJECTS = {
    "follow-up": "Follow-up due",
    "goal-review": "Goal review due",
    "plan-review": "Care plan review due",
    "referral-response": "Referral waiting for your response",
    "referral-contact": "Referral accepted: first contact with the client due",
    "referral-escalation": "Referral not answered in time",
    "referral-closed": "Referral closed",
    "follow-up-overdue": "Follow-up still not done",
    "follow-up-escalation": "Follow-up missed repeatedly",
    "digest": "Your daily summary",
}
NO_PRACTICE = "no practice"
LISTED_KINDS = ("follow-up", "follow-up-escalation", "goal-review", "plan-review", "referral-response",
                "referral-contact", "referral-escalation")


class BatchRenderer:
    """Render the reminders of one batch, looking up each recipient's time zone and each practice's title once."""

    def __init__(self, *, now: datetime | None = None):
        self.now = now
        self._zones: dict[str, object] = {}
        self._titles: dict[str, str | None] = {}

    def __call__(self, session: Session, reminder: Reminder) -> dict:
        return render(session, reminder, now=self.now, cache=self)

    def zone(self, session: Session, recipient: str):
        """Return the recipient's time zone (looked up once per batch)."""
        if recipient not in self._zones:
            self._zones[recipient] = _zone_of(session, recipient)
        return self._zones[recipient]

    def title(self, session: Session, canonical: str | None) -> str | None:
        """Return a practice's title (looked up once per batch)."""
        if canonical not in self._titles:
            self._titles[canonical] = _practice_title(session, canonical)
        return self._titles[canonical]


def render(session: Session, reminder: Reminder, *, now: datetime | None = None,
           cache: BatchRenderer | None = None) -> dict:
    """Return the message of a reminder: {"subject", "text", "data"}; cache shares lookups across a batch."""
    if reminder.kind == "digest":
        return _digest(session, reminder, now=timing.utc(now or utcnow()))
    payload = reminder.payload or {}
    # The time as the recipient reads their clock.
    zone = cache.zone(session, reminder.recipient) if cache else _zone_of(session, reminder.recipient)
    lines = [f"{SUBJECTS.get(reminder.kind, 'Reminder')}: {_about(reminder)}."]
    due = payload.get("due")
    if due:
        lines.append(f"Due: {_local(due, zone)}.")
    if reminder.tier or payload.get("practice"):
        title = cache.title(session, payload.get("practice")) if cache else _practice_title(
            session, payload.get("practice"))
        lines.append(f"Practice: {title or 'not named'}"
                     f" ({reminder.tier or NO_PRACTICE}).")
    if reminder.patient:
        lines.append(f"Client: {reminder.patient} (open careplan to see who this is).")
    if reminder.kind == "referral-escalation" and payload.get("misses"):
        lines.append(f"The partner has not answered {payload['misses']} business day(s) after the response was due.")
    if reminder.kind == "follow-up-overdue" and payload.get("periods_overdue"):
        lines.append(f"No progress note since it fell due: {payload['periods_overdue']} cadence period(s) ago "
                     f"(every {payload.get('cadence_days')} days).")
    if reminder.kind == "follow-up-escalation" and payload.get("misses"):
        lines.append(f"The follow-up by {payload.get('follow_up_recipient') or 'its performer'} has been missed "
                     f"{payload['misses']} time(s) in a row (not done by its due moment).")
    subject = f"{SUBJECTS.get(reminder.kind, 'Reminder')}: {_about(reminder)}"
    return {"subject": subject[:200], "text": "\n".join(lines), "data": _data(reminder)}


def _zone_of(session: Session, recipient: str):
    from careplan.reminders.rules import preferences_of

    return preferences_of(session, recipient).zone


def _about(reminder: Reminder) -> str:
    payload = reminder.payload or {}
    if reminder.kind in ("follow-up", "follow-up-overdue", "follow-up-escalation"):
        return f"{payload.get('care_plan') or reminder.source.split('#')[0]} activity {payload.get('activity', '')}"
    return reminder.source


def _data(reminder: Reminder) -> dict:
    payload = reminder.payload or {}
    return {"reminder": reminder.id, "key": reminder.key, "kind": reminder.kind, "source": reminder.source,
            "recipient": reminder.recipient, "patient": reminder.patient, "tier": reminder.tier,
            "due_at": timing.utc(reminder.due_at).isoformat() if reminder.due_at else None,
            "links": {k: payload[k] for k in ("care_plan", "goal", "task", "focus", "practice") if payload.get(k)}}


def _practice_title(session: Session, canonical: str | None) -> str | None:
    # The catalogue's title is public definitional text, unlike an activity's description.
    if not canonical:
        return None
    practice = catalogue.practice_by_url(session, canonical)
    return (practice or {}).get("title") or (practice or {}).get("name")


def _local(iso: str, zone) -> str:
    try:
        moment = timing.utc(datetime.fromisoformat(iso)).astimezone(zone)
    except ValueError:
        return iso
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def digest_items(session: Session, recipient: str, *, until: datetime, now: datetime) -> list[Reminder]:
    """Return a recipient's reminders not yet done that fall due by until (overdue ones included)."""
    return list(session.scalars(select(Reminder).where(
        Reminder.recipient == recipient, Reminder.kind.in_(LISTED_KINDS), Reminder.state != "cancelled",
        Reminder.done_at.is_(None), Reminder.due_at <= until).order_by(Reminder.due_at, Reminder.id)))


def sections(items: list[Reminder]) -> list[tuple[str, list[Reminder]]]:
    """Group reminders by tier in adoption order, then those of no practice (empty sections left out)."""
    tiers = [*TIER_ORDER, *sorted({i.tier for i in items if i.tier and i.tier not in TIER_ORDER}), None]
    grouped = []
    for tier in sorted(tiers, key=lambda t: (sort_key(t), t is None, t or "")):
        members = [i for i in items if i.tier == tier]
        if members:
            grouped.append((tier or NO_PRACTICE, members))
    return grouped


def _digest(session: Session, reminder: Reminder, *, now: datetime) -> dict:
    payload = reminder.payload or {}
    zone = timing.zone(payload.get("timezone"))
    day = payload.get("date") or now.astimezone(zone).date().isoformat()
    end_of_day = timing.at_local(datetime.fromisoformat(day).date() + timedelta(days=1),
                                 datetime.min.time(), tz=zone)
    items = digest_items(session, reminder.recipient, until=end_of_day, now=now)
    lines = [f"Daily summary for {reminder.recipient}, {day}: {len(items)} item(s) due or overdue."]
    data_sections = []
    for label, members in sections(items):
        lines.append("")
        lines.append(label.capitalize())
        entries = []
        for item in members:
            state = "overdue" if timing.utc(item.due_at) < timing.utc(reminder.due_at) else "due"
            due_text = timing.utc(item.due_at).astimezone(zone).strftime("%Y-%m-%d %H:%M")
            lines.append(f"- [{state}] {SUBJECTS.get(item.kind, item.kind)}: {_about(item)}, due {due_text}"
                         + (f", client {item.patient}" if item.patient else ""))
            entries.append({**_data(item), "state": state})
        data_sections.append({"tier": None if label == NO_PRACTICE else label, "label": label, "items": entries})
    if not items:
        lines.append("Nothing is due today.")
    return {"subject": f"{SUBJECTS['digest']}: {len(items)} due or overdue ({day})", "text": "\n".join(lines),
            "data": {"reminder": reminder.id, "key": reminder.key, "kind": "digest", "recipient": reminder.recipient,
                     "date": day, "sections": data_sections}}
