"""The referral Task state machine (issue 6), enforced by the store on every write path, and its closing effects.

A referral Task is a Task with intent ``order``, an Organization ``owner`` (the partner agency) and a ServiceRequest
``focus`` (what is needed); ``careplan.store.service.create_in`` / ``update_in`` call ``check_transition`` before a
version is stored and ``after_write`` once it is, so /fhir (PUT, PATCH, transaction Bundles), imports and /api/v1
all obey the same rules. The table follows the Gravity SDOH Clinical Care referral Task diagram.

Public names (kept stable for the coordination and partner APIs):

- ``FINAL``, ``OPEN``, ``SENT``, ``REASON_REQUIRED``, ``IMMUTABLE`` (sets of statuses / elements);
- ``ALLOWED``: ``{from status (None: create): {to status: frozenset of sides}}``, sides ``"requester"`` /
  ``"partner"``; an entry whose target equals its source is a version that leaves the status unchanged;
- ``is_referral(task)``, ``side_of(caller, task)`` (``"requester"`` | ``"partner"`` | ``"both"`` | None),
  ``allowed_targets(status, side)``;
- ``check_transition(session, *, old, new)`` raises ``ReferralRuleViolation`` (an ``UnprocessableEntity``, 422)
  whose ``rule`` names the broken rule (``referral-structure``, ``referral-transition``, ``referral-final``,
  ``referral-side``, ``referral-immutable``, ``referral-reason``, ``referral-outcome``, ``referral-consent``);
- ``disclosure_decision(session, *, task, now)``: whether the patient's Consents let the referral reach the owner;
- ``after_write(session, *, old, new, now)``: on reaching a final status, a progress note on the linked CarePlan
  activity (``detail.status`` completed on completion) and a ``referral-closed`` Communication to Task.requester.

Sending (a Task entering requested or received, or re-addressed while sent) needs a Consent that expressly permits
disclosure of the Task, and of its ServiceRequest, to the owner organisation (a sensitive ServiceRequest needs a
permit naming its security label), unless the caller broke the glass. Trusted system work is not exempt.
"""

from __future__ import annotations

import copy
import logging
import re
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan.errors import FhirError, UnprocessableEntity
from careplan.models import Resource, SearchReference
from careplan.referrals import codes
from careplan.security import consent, context, labels, policy

log = logging.getLogger(__name__)
REQUESTER, PARTNER, BOTH = "requester", "partner", "both"
FINAL = frozenset({"rejected", "cancelled", "completed", "failed", "entered-in-error"})
OPEN = frozenset({"draft", "requested", "received", "accepted", "in-progress", "on-hold"})
SENT = frozenset({"requested", "received"})
REASON_REQUIRED = frozenset({"rejected", "cancelled", "on-hold", "failed"})
IMMUTABLE = ("focus", "for", "owner", "requester")
REQUESTER_ROLES = frozenset({"coordinator", "ehr"})

_R, _P, _RP = frozenset({REQUESTER}), frozenset({PARTNER}), frozenset({REQUESTER, PARTNER})
ALLOWED: dict[str | None, dict[str, frozenset[str]]] = {
    None: {"draft": _R, "requested": _R, "received": _P},
    "draft": {"draft": _R, "requested": _R, "cancelled": _RP, "entered-in-error": _R},
    "requested": {"requested": _RP, "received": _P, "accepted": _P, "rejected": _P, "cancelled": _RP,
                  "entered-in-error": _R},
    "received": {"received": _RP, "accepted": _P, "rejected": _P, "cancelled": _RP, "entered-in-error": _R},
    "accepted": {"accepted": _RP, "in-progress": _P, "on-hold": _P, "completed": _P, "failed": _P,
                 "cancelled": _RP, "entered-in-error": _R},
    "in-progress": {"in-progress": _RP, "on-hold": _P, "completed": _P, "failed": _P, "cancelled": _RP,
                    "entered-in-error": _R},
    "on-hold": {"on-hold": _RP, "in-progress": _P, "completed": _P, "failed": _P, "cancelled": _RP,
                "entered-in-error": _R},
    "rejected": {"entered-in-error": _R},
    "cancelled": {"entered-in-error": _R},
    "completed": {"entered-in-error": _R},
    "failed": {"entered-in-error": _R},
    "entered-in-error": {},
}
STATUSES = tuple(s for s in ALLOWED if s is not None)

_LOCAL_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_CLOSING_VERBS = {"completed": "completed", "rejected": "declined", "cancelled": "cancelled", "failed": "failed"}


# The importer reports an error by its class docstring (never its message), so the docstring says what broke.
class ReferralRuleViolation(UnprocessableEntity):
    """The write breaks the referral workflow (its status table, sides, reasons, outcome or consent)."""

    def __init__(self, rule: str, message: str, *, expression: str = "Task.status"):
        super().__init__(f"[{rule}] {message}", expression=expression)
        self.rule = rule


# -- what a referral is, and who acts --------------------------------------------------------------------


def local_reference(value: object) -> str | None:
    """Return "Type/id" of a Reference (or reference string), dropping a base URL and version; None otherwise."""
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str):
        return None
    match = _LOCAL_REFERENCE.search(reference)
    return match.group(1) if match else None


def _target(task: dict, element: str, resource_type: str) -> str | None:
    reference = local_reference(task.get(element))
    return reference if reference and reference.startswith(f"{resource_type}/") else None


def is_referral(task: dict | None) -> bool:
    """Tell whether task is a referral Task: intent order, owned by an Organization, focused on a ServiceRequest."""
    return (isinstance(task, dict) and task.get("resourceType") == "Task" and task.get("intent") == "order"
            and _target(task, "owner", "Organization") is not None
            and _target(task, "focus", "ServiceRequest") is not None)


def side_of(caller: policy.Caller | None, task: dict) -> str | None:
    """Return the side caller acts on for task: requester, partner, both (admin, trusted system) or None."""
    if caller is None or caller.role == "admin":
        return BOTH
    if caller.role in REQUESTER_ROLES:
        return REQUESTER
    owner = _target(task, "owner", "Organization")
    if caller.role == "partner" and caller.organization and owner == local_reference(caller.organization):
        return PARTNER
    return None


def allowed_targets(status: str | None, side: str | None) -> list[str]:
    """Return the statuses side may move a referral in status to (None: on create), in table order."""
    sides = {REQUESTER, PARTNER} if side == BOTH else {side}
    return [target for target, who in ALLOWED.get(status, {}).items() if who & sides]


def _may(side: str | None, who: frozenset[str]) -> bool:
    return side == BOTH or side in who


# -- the rules -------------------------------------------------------------------------------------------


def check_transition(session: Session, *, old: dict | None, new: dict) -> None:
    """Raise ReferralRuleViolation unless the write of new over old (None: a create) keeps the referral rules."""
    if not (is_referral(new) or is_referral(old)):
        return
    if old is not None and _without_server_meta(old) == _without_server_meta(labels.apply(new, previous=old)):
        return  # an identical write stores nothing
    current = context.current()
    caller = current.caller if current is not None else None
    before = old.get("status") if old is not None else None
    after = new.get("status")
    _require_structure(new)
    if before in FINAL:
        if after != "entered-in-error":
            raise ReferralRuleViolation("referral-final", f"A referral Task that is {before} is final: it may not "
                                        "change any more, except to entered-in-error")
    targets = ALLOWED.get(before, {})
    if after not in targets:
        allowed = ", ".join(t for t in targets if t != before) or "nothing"
        where = f"be created as {after}" if old is None else f"go from {before} to {after}"
        raise ReferralRuleViolation("referral-transition",
                                    f"A referral Task may not {where} (allowed: {allowed})")
    side = side_of(caller, old if old is not None else new)
    if not _may(side, targets[after]):
        who = " or ".join(sorted(targets[after]))
        change = f"keep a {after} referral's status" if before == after else f"set a referral's status to {after}"
        raise ReferralRuleViolation("referral-side", f"Only the {who} side may {change}")
    if old is not None and before != "draft":
        for element in IMMUTABLE:
            if (old.get(element) or None) != (new.get(element) or None) and not (
                    element == "owner" and not old.get("owner")):
                hint = " (a new partner is a re-referral: a new Task)" if element == "owner" else ""
                raise ReferralRuleViolation("referral-immutable",
                                            f"Task.{element} of a sent referral may not change{hint}",
                                            expression=f"Task.{element}")
    if after in REASON_REQUIRED and not _has_concept(new.get("statusReason")):
        raise ReferralRuleViolation("referral-reason", f"A {after} referral needs a reason (Task.statusReason)",
                                    expression="Task.statusReason")
    if after == "completed":
        _require_outcome(new)
    readdressed = old is not None and local_reference(old.get("owner")) != local_reference(new.get("owner"))
    if after in SENT and (before != after or readdressed):
        if caller is not None and caller.break_glass:
            return  # the audited break-glass purpose: the AuditEvent of this write carries the justification
        from careplan.store import repository  # the store calls this module; import lazily to avoid a cycle

        decision = disclosure_decision(session, task=new, now=repository.transaction_time(session))
        if not decision.permitted:
            raise ReferralRuleViolation(
                "referral-consent", f"The patient's Consents do not let this referral be sent to "
                f"{local_reference(new.get('owner'))}: {decision.reason}", expression="Task.owner")


def _require_structure(task: dict) -> None:
    if not is_referral(task):
        raise ReferralRuleViolation("referral-structure", "A referral Task keeps intent order, an Organization "
                                    "owner and a ServiceRequest focus", expression="Task")
    if _target(task, "for", "Patient") is None:
        raise ReferralRuleViolation("referral-structure", "A referral Task needs Task.for, a Patient reference",
                                    expression="Task.for")


def _has_concept(concept: object) -> bool:
    if not isinstance(concept, dict):
        return False
    return bool(str(concept.get("text") or "").strip()) or any(
        isinstance(c, dict) and c.get("code") for c in concept.get("coding") or [])


def _require_outcome(task: dict) -> None:
    outputs = [o for o in task.get("output") or [] if isinstance(o, dict)]
    if not outputs:
        raise ReferralRuleViolation("referral-outcome", "A completed referral needs an outcome in Task.output (a "
                                    f"coded outcome from {codes.OUTCOME_SYSTEM} or a reference such as a Procedure)",
                                    expression="Task.output")
    for index, output in enumerate(outputs):
        reference = local_reference(output.get("valueReference"))
        concept = output.get("valueCodeableConcept")
        if reference is not None:
            continue
        if _has_concept(concept):
            unknown = [c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict)
                       and c.get("system") == codes.OUTCOME_SYSTEM and c.get("code") not in codes.OUTCOMES]
            if unknown:
                raise ReferralRuleViolation("referral-outcome", f"Unknown referral outcome code {unknown[0]!r}; use "
                                            f"one of {', '.join(codes.OUTCOMES)}", expression=f"Task.output[{index}]")
            continue
        raise ReferralRuleViolation("referral-outcome", "Each Task.output of a completed referral needs a "
                                    "valueCodeableConcept (the outcome) or a valueReference (e.g. a Procedure)",
                                    expression=f"Task.output[{index}]")


def _without_server_meta(resource: dict) -> dict:
    from careplan.store import repository  # the store calls this module; import lazily to avoid a cycle

    return repository.without_server_meta(resource)


# -- consent -------------------------------------------------------------------------------------------


def disclosure_decision(session: Session, *, task: dict, now: datetime) -> consent.Decision:
    """Decide whether the patient's Consents permit disclosing the referral (Task and ServiceRequest) to its owner."""
    owner = local_reference(task.get("owner"))
    patient = _target(task, "for", "Patient")
    if owner is None or patient is None:
        return consent.Decision(False, "the referral names no owner organization or no patient")
    consents = _consents_of(session, patient.removeprefix("Patient/"))
    disclosed = [("Task", labels.labels_of(labels.apply(task)))]
    focus = _live(session, _target(task, "focus", "ServiceRequest"))
    if focus is not None:
        disclosed.append(("ServiceRequest", labels.labels_of(focus)))
    decision = consent.Decision(False, "nothing to disclose")
    for resource_type, resource_labels in disclosed:
        decision = consent.decide(consents, consent.Request(frozenset({owner}), resource_type, resource_labels, now,
                                                            "TREAT"), express_consent_required=True)
        if not decision.permitted:
            return consent.Decision(False, f"{decision.reason} (the {resource_type})", decision.consent_ids)
    return decision


def _consents_of(session: Session, patient_id: str) -> list[dict]:
    about = select(SearchReference.resource_pk).where(
        SearchReference.res_type == "Consent", SearchReference.param == "patient",
        SearchReference.target_type == "Patient", SearchReference.target_id == patient_id)
    return list(session.scalars(select(Resource.content).where(
        Resource.res_type == "Consent", Resource.deleted.is_(False), Resource.pk.in_(about))))


def _live(session: Session, reference: str | None) -> dict | None:
    if reference is None:
        return None
    resource_type, _, resource_id = reference.partition("/")
    row = session.scalars(select(Resource).where(Resource.res_type == resource_type, Resource.res_id == resource_id,
                                                 Resource.deleted.is_(False))).one_or_none()
    return row.content if row is not None else None


# -- closing effects -----------------------------------------------------------------------------------


def after_write(session: Session, *, old: dict | None, new: dict | None, now: datetime) -> None:
    """On a referral reaching a final status, note it on the CarePlan activity and tell the coordinator."""
    if not is_referral(new):
        return
    before = old.get("status") if old is not None else None
    after = new.get("status")
    if after not in _CLOSING_VERBS or before == after:
        return  # entered-in-error is a correction by the requester side, not an outcome to report
    text = closing_text(new)
    with _as_system():
        try:
            with session.begin_nested():
                note_on_care_plan(session, task=new, text=text, now=now)
        except FhirError as error:
            # The partner's outcome must not hinge on a plan it cannot see (one stored before today's profile
            # rules, say); the coordinator is still told, and the plan is left as it was.
            log.warning("referral Task/%s closed, but its care plan could not be noted: %s", new.get("id"),
                        type(error).__name__)
        tell_requester(session, task=new, text=text, now=now)


@contextmanager
def _as_system():
    # The closing effects are the server's, not the caller's: a partner may not edit care plans or write
    # Communications from the coordinator's side, yet its completion must still reach them.
    token = context.enter(None)
    try:
        yield
    finally:
        context.leave(token)


def closing_text(task: dict) -> str:
    """Return the one-line summary of how a referral closed: its outcome, or the reason."""
    status = task.get("status")
    owner = (task.get("owner") or {}).get("display") or local_reference(task.get("owner")) or "the partner"
    verb = _CLOSING_VERBS.get(status, status)
    if status == "completed":
        detail = "; ".join(_describe_output(o) for o in task.get("output") or [] if isinstance(o, dict))
    else:
        detail = _describe_concept(task.get("statusReason"), codes.DECLINE_REASONS, codes.DECLINE_REASON_SYSTEM)
    return f"Referral to {owner} {verb}" + (f": {detail}" if detail else "")


def _describe_output(output: dict) -> str:
    reference = local_reference(output.get("valueReference"))
    if reference is not None:
        return (output.get("valueReference") or {}).get("display") or reference
    return _describe_concept(output.get("valueCodeableConcept"), codes.OUTCOMES, codes.OUTCOME_SYSTEM)


def _describe_concept(concept: object, known: dict[str, str], system: str) -> str:
    if not isinstance(concept, dict):
        return ""
    parts = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            label = known.get(coding["code"]) if coding.get("system") == system else None
            parts.append(coding.get("display") or label or coding["code"])
    if concept.get("text"):
        parts.append(concept["text"])
    return " - ".join(dict.fromkeys(parts))


def note_on_care_plan(session: Session, *, task: dict, text: str, now: datetime) -> list[str]:
    """Append a progress note to the CarePlan activities that serve task; return the CarePlans changed.

    The plans are the task's basedOn CarePlans, else the patient's live plans. An activity serves the task when
    its id is the task's activity-id extension, or its reference or outcomeReference names the task's
    ServiceRequest (or the task itself). Only plans of the task's patient count, so a Task cannot be aimed at
    someone else's plan.
    """
    from careplan.store import service  # the store calls this module; import lazily to avoid a cycle
    from careplan.store.records import format_instant

    patient = _target(task, "for", "Patient")
    focus = _target(task, "focus", "ServiceRequest")
    task_reference = f"Task/{task.get('id')}"
    activity_id = next((e.get("valueString") for e in task.get("extension") or [] if isinstance(e, dict)
                        and e.get("url") == codes.ACTIVITY_ID_EXTENSION), None)
    plan_ids = [r.removeprefix("CarePlan/") for r in (local_reference(b) for b in task.get("basedOn") or [])
                if r and r.startswith("CarePlan/")]
    if not plan_ids and patient is not None:
        plan_ids = _plans_of(session, patient)
    changed = []
    for plan_id in dict.fromkeys(plan_ids):
        plan = _live(session, f"CarePlan/{plan_id}")
        if plan is None or local_reference(plan.get("subject")) != patient:
            continue
        plan = copy.deepcopy(plan)
        touched = False
        for activity in plan.get("activity") or []:
            if not isinstance(activity, dict) or not _serves(activity, activity_id, focus, task_reference):
                continue
            activity.setdefault("progress", []).append({"time": format_instant(now), "text": text})
            detail = activity.get("detail")
            if task.get("status") == "completed" and isinstance(detail, dict):
                detail["status"] = "completed"
            touched = True
        if touched:
            service.update_in(session, resource=plan, resource_id=plan_id, now=now)
            changed.append(f"CarePlan/{plan_id}")
    return changed


def _serves(activity: dict, activity_id: str | None, focus: str | None, task_reference: str) -> bool:
    if activity_id is not None and activity.get("id") == activity_id:
        return True
    linked = {local_reference(activity.get("reference"))}
    linked.update(local_reference(r) for r in activity.get("outcomeReference") or [])
    return bool(linked & {focus, task_reference} - {None})


def _plans_of(session: Session, patient: str) -> list[str]:
    # No basedOn: look through the patient's live plans for the activity that references the referral.
    about = select(SearchReference.resource_pk).where(
        SearchReference.res_type == "CarePlan", SearchReference.param == "subject",
        SearchReference.target_type == "Patient", SearchReference.target_id == patient.removeprefix("Patient/"))
    return list(session.scalars(select(Resource.res_id).where(
        Resource.res_type == "CarePlan", Resource.deleted.is_(False), Resource.pk.in_(about)).order_by(Resource.pk)))


def tell_requester(session: Session, *, task: dict, text: str, now: datetime) -> str | None:
    """Create the completed referral-closed Communication to Task.requester; return its reference (None: no one)."""
    from careplan.store import service  # the store calls this module; import lazily to avoid a cycle
    from careplan.store.records import format_instant

    requester = local_reference(task.get("requester"))
    if requester is None:
        return None
    communication = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": codes.COMMUNICATION_CATEGORY_SYSTEM, "code": "referral-closed",
                                  "display": codes.COMMUNICATION_CATEGORIES["referral-closed"]}]}],
        "subject": {"reference": _target(task, "for", "Patient")},
        "about": [{"reference": f"Task/{task.get('id')}"}],
        "sent": format_instant(now),
        "recipient": [{"reference": requester}],
        "sender": {"reference": local_reference(task.get("owner"))},
        "payload": [{"contentString": text}],
    }
    stored = service.create_in(session, resource=communication, now=now).stored
    return f"Communication/{stored.id}"
