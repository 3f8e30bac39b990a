"""What people see and set of reminders: the tier-grouped listing, the inbox, notification settings, dead letters.

Every function works for the caller of the current request context (careplan.security.context): coordinators see
reminders addressed to them and those about the patients whose care teams they coordinate, partner agencies those
addressed to their organisation, administrators everything. The inbox is the Communications addressed to the caller.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, false, literal, or_, select, true, tuple_
from sqlalchemy.orm import Session

from careplan.coordination.errors import NotFound, RuleViolation
from careplan.coordination.store import caller_reference, now, read, search
from careplan.db import Database
from careplan.errors import Forbidden
from careplan.models import UTCDateTime
from careplan.practices.tiers import TIER_ORDER
from careplan.reminders import timing
from careplan.reminders.models import REMINDER_STATES, Delivery, RecipientChannel, RecipientPreference, Reminder
from careplan.search import query as search_query
from careplan.security import context
from careplan.store import service

READ_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/communication-read-at"
DONE_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/communication-done-at"
NO_TIER = "none"
KINDS = ("follow-up", "follow-up-overdue", "follow-up-escalation", "goal-review", "plan-review", "referral-response", "referral-contact",
         "referral-escalation", "referral-closed", "digest")
_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.\-]{1,253}\.[A-Za-z]{2,63}$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]{0,490}$")


@dataclass(frozen=True)
class Page:
    """One page of a listing with the opaque cursor of the next page (None on the last)."""

    items: list
    next_cursor: str | None


# -- who is asking ---------------------------------------------------------------------------------------------


def me() -> str | None:
    """Return the reference reminders and messages address the caller by (a partner: its organisation)."""
    current = context.current()
    if current is None:
        return None
    if current.caller.role == "partner":
        return current.caller.organization
    reference = (caller_reference() or {}).get("reference")
    return reference


def _require_me() -> str:
    reference = me()
    if reference is None:
        raise Forbidden("This needs a caller who can receive reminders (a person, or a partner's organisation)")
    return reference


def _is_admin() -> bool:
    current = context.current()
    return current is None or current.caller.role == "admin"


def _coordinated_patients(session: Session, reference: str) -> list[str]:
    # Patients whose care team names the caller as coordinator (issue 5 stores the coordinator there).
    rows = search_query.matching_rows(session, "CareTeam", search_query.parse([("participant", reference)]),
                                      limit=5000)
    patients = set()
    for row in rows:
        team = row.content or {}
        for participant in team.get("participant") or []:
            roles = {c.get("code") for r in participant.get("role") or [] for c in r.get("coding") or []}
            if "coordinator" in roles and (participant.get("member") or {}).get("reference") == reference:
                subject = (team.get("subject") or {}).get("reference")
                if subject:
                    patients.add(subject)
    return sorted(patients)


def _visible_reminders(session: Session):
    if _is_admin():
        return true()
    current = context.current()
    reference = me()
    if reference is None:
        return false()
    if current.caller.role == "partner":
        return Reminder.recipient == reference
    patients = _coordinated_patients(session, reference)
    return or_(Reminder.recipient == reference, Reminder.patient.in_(patients)) if patients \
        else Reminder.recipient == reference


# -- the reminder listing ------------------------------------------------------------------------------------------


def _tier_rank():
    whens = [(Reminder.tier == tier, rank) for rank, tier in enumerate(TIER_ORDER)]
    return case(*whens, (Reminder.tier.is_(None), len(TIER_ORDER) + 1), else_=len(TIER_ORDER))


def list_reminders(db: Database, *, state: str | None = None, tier: str | None = None, recipient: str | None = None,
                   kind: str | None = None, due_from: datetime | None = None, due_to: datetime | None = None,
                   limit: int = 20, cursor: str | None = None) -> Page:
    """Return a page of the reminders the caller may see, ordered by tier (adoption order, then none) and due time."""
    if due_from and due_to and timing.utc(due_from) > timing.utc(due_to):
        raise RuleViolation("due_from is after due_to", errors={"due_from": ["must not be after due_to"]},
                            location="query")
    rank = _tier_rank()
    with db.reading() as session:
        statement = select(Reminder, rank.label("rank")).where(_visible_reminders(session))
        if state:
            statement = statement.where(Reminder.state == state)
        if tier:
            statement = statement.where(Reminder.tier.is_(None) if tier == NO_TIER else Reminder.tier == tier)
        if recipient:
            statement = statement.where(Reminder.recipient == recipient)
        if kind:
            statement = statement.where(Reminder.kind == kind)
        if due_from:
            statement = statement.where(Reminder.due_at >= timing.utc(due_from))
        if due_to:
            statement = statement.where(Reminder.due_at <= timing.utc(due_to))
        if cursor:
            after_rank, after_due, after_id = _decode(cursor)
            statement = statement.where(tuple_(rank, Reminder.due_at, Reminder.id) > tuple_(
                literal(after_rank), literal(after_due, UTCDateTime()), literal(after_id)))
        rows = session.execute(statement.order_by(rank, Reminder.due_at, Reminder.id).limit(limit + 1)).all()
        items = [view(row.Reminder) for row in rows[:limit]]
        following = None
        if len(rows) > limit:
            last = rows[limit - 1]
            following = _encode([last.rank, timing.utc(last.Reminder.due_at).isoformat(), last.Reminder.id])
    return Page(items, following)


def group(items: list[dict]) -> list[dict]:
    """Group listed reminders by tier: recommended, promising, emerging, any other, then none."""
    groups: list[dict] = []
    for item in items:
        label = item["tier"] or NO_TIER
        if not groups or groups[-1]["label"] != label:
            groups.append({"tier": item["tier"], "label": label, "items": []})
        groups[-1]["items"].append(item)
    return groups


def view(reminder: Reminder) -> dict:
    """Return the API view of a reminder."""
    payload = reminder.payload or {}
    return {"id": reminder.id, "key": reminder.key, "kind": reminder.kind, "source": reminder.source,
            "recipient": reminder.recipient, "patient": reminder.patient, "tier": reminder.tier,
            "state": reminder.state, "due_at": timing.utc(reminder.due_at),
            "done_at": timing.utc(reminder.done_at) if reminder.done_at else None,
            "on_time": (timing.utc(reminder.done_at) <= timing.utc(reminder.due_at)) if reminder.done_at else None,
            "details": {k: v for k, v in payload.items() if k in (
                "care_plan", "activity", "goal", "task", "focus", "practice", "due", "cadence_days", "date")}}


def _encode(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, datetime, int]:
    try:
        rank, due, ident = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(rank), timing.utc(datetime.fromisoformat(due)), int(ident)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise RuleViolation("The cursor is not one this listing gave", errors={"cursor": ["not a valid cursor"]},
                            location="query") from None


# -- dead letters (operators) ------------------------------------------------------------------------------------


def _require_admin() -> None:
    if not _is_admin():
        raise Forbidden("Only administrators may see and requeue deliveries")


def list_deliveries(db: Database, *, state: str | None = "dead", limit: int = 20, cursor: str | None = None) -> Page:
    """Return a page of outbox deliveries (dead letters by default), oldest first; administrators only."""
    _require_admin()
    after = 0
    if cursor:
        try:
            after = int(cursor)
        except ValueError:
            raise RuleViolation("The cursor is not one this listing gave", errors={"cursor": ["not a valid cursor"]},
                                location="query") from None
    with db.reading() as session:
        statement = select(Delivery).where(Delivery.id > after)
        if state:
            statement = statement.where(Delivery.state == state)
        rows = list(session.scalars(statement.order_by(Delivery.id).limit(limit + 1)))
        items = [delivery_view(d) for d in rows[:limit]]
    return Page(items, str(items[-1]["id"]) if len(rows) > limit else None)


def delivery_view(delivery: Delivery) -> dict:
    """Return the API view of a delivery (no message body: it is for operators)."""
    return {"id": delivery.id, "reminder_id": delivery.reminder_id, "channel": delivery.channel,
            "recipient": delivery.recipient, "idempotency_key": delivery.idempotency_key, "state": delivery.state,
            "attempts": delivery.attempts, "next_attempt_at": timing.utc(delivery.next_attempt_at),
            "last_error": delivery.last_error,
            "delivered_at": timing.utc(delivery.delivered_at) if delivery.delivered_at else None}


def requeue_deliveries(db: Database, *, ids: list[int]) -> list[dict]:
    """Put dead deliveries back in the outbox with a fresh retry window; return them. Administrators only."""
    _require_admin()
    moment = now()
    with db.writing() as session:
        rows = list(session.scalars(select(Delivery).where(Delivery.id.in_(ids)).with_for_update()))
        missing = sorted(set(ids) - {row.id for row in rows})
        if missing:
            raise NotFound(f"No delivery has the id {missing[0]}", errors={"ids": [f"unknown: {missing}"]})
        not_dead = [row.id for row in rows if row.state != "dead"]
        if not_dead:
            raise RuleViolation("Only dead deliveries can be requeued", errors={"ids": [f"not dead: {not_dead}"]})
        for row in rows:
            row.state, row.attempts, row.next_attempt_at = "pending", 0, moment
            row.first_attempt_at, row.lease_holder, row.lease_expires_at = None, None, None
        session.flush()
        return [delivery_view(row) for row in sorted(rows, key=lambda r: r.id)]


# -- the inbox -----------------------------------------------------------------------------------------------------


def inbox(db: Database, *, limit: int = 20, cursor: str | None = None) -> Page:
    """Return a page of the Communications addressed to the caller, newest first."""
    reference = _require_me()
    with db.reading() as session:
        page = search(session, "Communication", [("recipient", reference), ("_sort", "-_lastUpdated")],
                      limit=limit, cursor=cursor)
    return Page([message_view(c) for c in page.items], page.next_cursor)


def message_view(communication: dict) -> dict:
    """Return the API view of an inbox message."""
    text = next((p.get("contentString") for p in communication.get("payload") or [] if p.get("contentString")), None)
    categories = [c.get("code") for concept in communication.get("category") or []
                  for c in concept.get("coding") or [] if c.get("code")]
    return {"id": communication["id"], "status": communication.get("status"), "category": categories,
            "sent": communication.get("sent"), "subject": (communication.get("subject") or {}).get("reference"),
            "about": [a.get("reference") for a in communication.get("about") or [] if a.get("reference")],
            "text": text, "read_at": _extension(communication, READ_EXTENSION),
            "done_at": _extension(communication, DONE_EXTENSION), "resource": communication}


def _extension(resource: dict, url: str) -> str | None:
    return next((e.get("valueDateTime") for e in resource.get("extension") or [] if e.get("url") == url), None)


def mark(db: Database, *, communication_id: str, read: bool = False, done: bool = False) -> dict:
    """Record that the caller read (and, with done, dealt with) a message addressed to them; return it."""
    reference = _require_me()
    moment = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    with db.writing() as session:
        communication = _read(session, communication_id)
        recipients = {r.get("reference") for r in communication.get("recipient") or []}
        if reference not in recipients:
            raise Forbidden("Only a message's recipient may mark it read or done")
        extensions = list(communication.get("extension") or [])
        wanted = [READ_EXTENSION] + ([DONE_EXTENSION] if done else [])
        changed = False
        for url in wanted:
            if _extension(communication, url) is None:
                extensions.append({"url": url, "valueDateTime": moment})
                changed = True
        if not changed:
            return message_view(communication)
        updated = {k: v for k, v in communication.items() if k != "meta"} | {"extension": extensions}
        if communication.get("meta", {}).get("security"):
            updated["meta"] = {"security": communication["meta"]["security"]}
        return message_view(service.update_in(session, resource=updated, resource_id=communication_id).stored.content)


def _read(session: Session, communication_id: str) -> dict:
    return read(session, "Communication", communication_id).content


# -- notification settings -----------------------------------------------------------------------------------------


def get_settings(db: Database) -> dict:
    """Return the caller's time zone, quiet hours, digest time and channels (secrets never shown again)."""
    reference = _require_me()
    with db.reading() as session:
        return _settings_view(session, reference)


def _settings_view(session: Session, reference: str) -> dict:
    from careplan.reminders import policy, rules

    row = session.get(RecipientPreference, reference)
    defaults = rules.preferences_of(session, reference, policy=policy.current())
    channels = session.scalars(select(RecipientChannel).where(RecipientChannel.recipient == reference,
                                                              RecipientChannel.active.is_(True))
                               .order_by(RecipientChannel.id))
    return {"recipient": reference, "timezone": row.timezone if row else defaults.zone.key,
            "quiet_start": row.quiet_start if row else None, "quiet_end": row.quiet_end if row else None,
            "digest_time": row.digest_time if row and row.digest_time else defaults.digest_time.strftime("%H:%M"),
            "channels": [channel_view(c) for c in channels]}


def channel_view(channel: RecipientChannel, *, secret: str | None = None) -> dict:
    """Return the API view of a channel; the secret only when it was just generated."""
    body = {"id": channel.id, "channel": channel.channel, "address": channel.address,
            "created_at": timing.utc(channel.created_at) if channel.created_at else None}
    if secret is not None:
        body["secret"] = secret
    return body


def put_settings(db: Database, *, timezone_name: str, quiet_start: str | None = None, quiet_end: str | None = None,
                 digest_time: str | None = None) -> dict:
    """Set the caller's time zone, quiet hours (both or neither) and digest time; return the settings."""
    reference = _require_me()
    errors: dict[str, list[str]] = {}
    if not timing.is_timezone(timezone_name):
        errors["timezone"] = ["not an IANA time zone such as America/Toronto"]
    for name, value in (("quiet_start", quiet_start), ("quiet_end", quiet_end), ("digest_time", digest_time)):
        try:
            timing.parse_hhmm(value)
        except ValueError:
            errors[name] = ["a local time like 07:30"]
    if (quiet_start is None) != (quiet_end is None):
        errors.setdefault("quiet_end", []).append("give both quiet_start and quiet_end, or neither")
    if errors:
        raise RuleViolation("The notification settings are not valid", errors=errors)
    with db.writing() as session:
        row = session.get(RecipientPreference, reference)
        if row is None:
            row = RecipientPreference(recipient=reference, timezone=timezone_name)
            session.add(row)
        row.timezone, row.quiet_start, row.quiet_end = timezone_name, quiet_start, quiet_end
        row.digest_time = digest_time or "07:30"
        row.updated_at = now()
        session.flush()
        # Scheduled reminders move to the new local time and quiet hours in the same transaction.
        from careplan.reminders import rules

        sources = list(session.scalars(select(Reminder.source).where(
            Reminder.recipient == reference, Reminder.state == "scheduled", Reminder.kind != "digest").distinct()))
        rules.resync_sources(session, sources=sources, now=now())
        return _settings_view(session, reference)


def add_channel(db: Database, *, channel: str, address: str) -> dict:
    """Register a webhook URL (a signing secret is generated and returned this once) or an e-mail address."""
    reference = _require_me()
    if channel == "webhook" and not _URL.match(address):
        raise RuleViolation("A webhook address is an http(s) URL", errors={"address": ["not an http(s) URL"]})
    if channel == "email" and not _EMAIL.match(address):
        raise RuleViolation("Not an e-mail address", errors={"address": ["not an e-mail address"]})
    if channel not in ("webhook", "email"):
        raise RuleViolation("A channel is webhook or email", errors={"channel": ["webhook or email"]})
    secret = secrets.token_urlsafe(32) if channel == "webhook" else None
    with db.writing() as session:
        row = session.scalar(select(RecipientChannel).where(
            RecipientChannel.recipient == reference, RecipientChannel.channel == channel,
            RecipientChannel.address == address))
        if row is None:
            row = RecipientChannel(recipient=reference, channel=channel, address=address, created_at=now())
            session.add(row)
        row.active, row.secret = True, secret
        session.flush()
        return channel_view(row, secret=secret)


def remove_channel(db: Database, *, channel_id: int) -> None:
    """Stop sending to one of the caller's channels."""
    reference = _require_me()
    if not 0 < channel_id < 2**63:
        raise NotFound(f"You have no channel {channel_id}")
    with db.writing() as session:
        row = session.get(RecipientChannel, channel_id)
        if row is None or row.recipient != reference or not row.active:
            raise NotFound(f"You have no channel {channel_id}")
        row.active = False


def states() -> tuple[str, ...]:
    """Return the reminder states a listing filters on."""
    return REMINDER_STATES

