"""Closed-loop referrals for coordinators and partner agencies, over the FHIR store (issue 6).

A referral is a ServiceRequest (what is needed) plus a Task (the partner's work: focus the ServiceRequest, owner the
partner Organization, requester the coordinator, basedOn the CarePlan and the activity-id extension) that the care
plan activity links in its outcomeReference. Every read and write goes through careplan.store.service and the
coordination store helpers, so the caller's policy, the patient's consent, the Task state machine
(careplan.referrals.workflow, enforced inside the store) and the audit trail apply exactly as on /fhir. Every
function is keyword-only and owns its transaction. No Flask here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from careplan.coordination import codes, partners
from careplan.coordination.errors import NotFound, RuleViolation
from careplan.coordination.store import caller_reference, filtered_page, now, read, search_all, validate
from careplan.db import Database
from careplan.errors import Forbidden, InvalidResource, UnprocessableEntity
from careplan.referrals import codes as referral_codes
from careplan.referrals import sla, timeline, workflow
from careplan.security import context
from careplan.store import repository, service
from careplan.store.records import format_instant

BASE = codes.BASE
ACTIVITY_ID_EXTENSION = referral_codes.ACTIVITY_ID_EXTENSION
CHANGED_BY_EXTENSION = timeline.CHANGED_BY_EXTENSION
SERVICE_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/service-category"
MESSAGE_CATEGORY = "referral-message"
TASK_CODE = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}
OUTCOMES = tuple(referral_codes.OUTCOMES)
DECLINE_REASONS = tuple(referral_codes.DECLINE_REASONS)
BUSINESS_STATUSES = tuple(referral_codes.BUSINESS_STATUSES)
PRIORITIES = ("routine", "urgent", "asap", "stat")
TASK_STATUSES = ("draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress",
                 "on-hold", "failed", "completed", "entered-in-error")
FINAL = workflow.FINAL
OPEN = tuple(s for s in TASK_STATUSES if s not in FINAL)
NEW = frozenset({"requested", "received"})
REREFERABLE = frozenset({"rejected", "failed", "cancelled"})
MAX_VERSIONS = 1000


# -- errors ------------------------------------------------------------------------------------------------------


@contextmanager
def _rules() -> Iterator[None]:
    # The store enforces the referral state machine and the consent rule for /fhir and this API alike: say what
    # broke in this API's terms (422 naming the rule, nothing written).
    try:
        yield
    except (InvalidResource, UnprocessableEntity) as error:
        fields: dict[str, list[str]] = {}
        for issue in error.issues:
            fields.setdefault(issue.expression or "referral", []).append(issue.diagnostics)
        raise RuleViolation("; ".join(i.diagnostics for i in error.issues), errors=fields) from None


def _create(session: Session, resource: dict) -> dict:
    validate(resource)
    with _rules():
        return service.create_in(session, resource=resource).stored.content


def _save(session: Session, resource: dict) -> dict:
    resource = dict(resource)
    meta = {k: v for k, v in (resource.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        resource["meta"] = meta
    validate(resource)
    with _rules():
        return service.update_in(session, resource=resource, resource_id=resource["id"]).stored.content


# -- small readers -----------------------------------------------------------------------------------------------


def _id_of(reference: str | None, resource_type: str) -> str | None:
    if reference and reference.startswith(f"{resource_type}/"):
        return reference.split("/", 1)[1]
    return None


def _ref(resource: dict | None, key: str) -> str | None:
    value = (resource or {}).get(key)
    return value.get("reference") if isinstance(value, dict) else None


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def is_referral(task: dict) -> bool:
    """Tell whether a Task is a referral (intent order, owned by an Organization, focused on a ServiceRequest)."""
    return (task.get("resourceType") == "Task" and task.get("intent") == "order"
            and (_ref(task, "owner") or "").startswith("Organization/")
            and (_ref(task, "focus") or "").startswith("ServiceRequest/"))


def activity_id_of(task: dict) -> str | None:
    """Return the care plan activity id a referral Task serves."""
    return next((e.get("valueString") for e in task.get("extension", []) if e.get("url") == ACTIVITY_ID_EXTENSION),
                None)


def care_plan_of(task: dict) -> str | None:
    """Return the CarePlan reference a referral Task is based on."""
    return next((b.get("reference") for b in task.get("basedOn", [])
                 if (b.get("reference") or "").startswith("CarePlan/")), None)


def versions_in(session: Session, *, task_id: str) -> list[dict]:
    """Return the versions of a visible Task, oldest first (the store's visibility check comes first)."""
    read(session, "Task", task_id)
    row = repository.head(session, "Task", task_id)
    page = repository.history(session, resource_type="Task", resource_pk=row.pk, since=None, count=MAX_VERSIONS,
                              cursor=None, with_total=False)
    return [entry.content for entry in reversed(page.entries) if entry.content is not None]


def versions_of(session: Session, tasks: list[dict]) -> dict[str, list[dict]]:
    """Return the versions of many Tasks the caller found by search, oldest first per id, in one query."""
    # The tasks come from a search as the caller, so each passed the visibility check versions_in does first.
    return repository.histories(session, resource_type="Task", resource_ids=[t["id"] for t in tasks])


def _prefetched(session: Session, loaded: dict[str, list[dict]] | None = None
                ) -> tuple[Callable[[list[dict]], None], Callable[[dict], list[dict]]]:
    """Return (prefetch, versions): prefetch loads the histories of a search page at once, versions reads them."""
    loaded = dict(loaded or {})

    def prefetch(tasks: list[dict]) -> None:
        loaded.update(versions_of(session, [t for t in tasks if is_referral(t) and t["id"] not in loaded]))

    def versions(task: dict) -> list[dict]:
        found = loaded.get(task["id"])
        return found if found else versions_in(session, task_id=task["id"])

    return prefetch, versions


def zone_of(session: Session, task: dict, *, settings) -> str:
    """Return the time zone of the referral's partner agency (its timezone extension, else the default)."""
    default = getattr(settings, "default_timezone", None) or sla.DEFAULT_TIMEZONE
    organization_id = _id_of(_ref(task, "owner"), "Organization")
    cache = session.info.setdefault("referrals.zones", {})
    if organization_id not in cache:
        try:
            organization = read(session, "Organization", organization_id).content if organization_id else None
        except NotFound:
            organization = None
        cache[organization_id] = sla.timezone_of(organization, default=default)
    return cache[organization_id]


def sla_of(task: dict, versions: list[dict], *, settings, moment: datetime, zone: str) -> dict:
    """Return the service-level view of a referral: due dates and whether response or first contact is overdue."""
    status = sla.status(task, versions, now=moment, settings=settings, tz=zone)
    return {"response_due": _stamp(status.response_due) if status.response_due else None,
            "response_overdue": bool(status.response_overdue),
            "contact_due": _stamp(status.contact_due) if status.contact_due else None,
            "contact_overdue": bool(status.contact_overdue)}


def _concept_view(concept: dict | None) -> dict | None:
    if not concept:
        return None
    coding = (concept.get("coding") or [{}])[0]
    return {"system": coding.get("system"), "code": coding.get("code"),
            "display": coding.get("display") or concept.get("text")}


def _age_days(task: dict, moment: datetime) -> int:
    authored = task.get("authoredOn") or (task.get("meta") or {}).get("lastUpdated")
    if not authored:
        return 0
    try:
        return max((moment - _instant(authored)).days, 0)
    except ValueError:
        return 0


def _view(session: Session, task: dict, versions: list[dict], *, settings, moment: datetime,
          with_patient: bool = False) -> dict:
    request = _focus(session, task)
    levels = sla_of(task, versions, settings=settings, moment=moment, zone=zone_of(session, task, settings=settings))
    view = {
        "id": task["id"], "status": task["status"], "business_status": timeline.business_status(task),
        "priority": task.get("priority") or (request or {}).get("priority") or "routine",
        "patient": _ref(task, "for"), "partner": _ref(task, "owner"), "requester": timeline.reference_text(
            task.get("requester")),
        "care_plan": care_plan_of(task), "activity": activity_id_of(task),
        "service_request": _ref(task, "focus"),
        "need": _concept_view((request or {}).get("code")),
        "reason": next((r.get("text") for r in (request or {}).get("reasonCode", []) if r.get("text")), None),
        "authored_on": task.get("authoredOn"), "last_updated": (task.get("meta") or {}).get("lastUpdated"),
        "age_days": _age_days(task, moment),
        "sla": levels, "overdue": levels["response_overdue"] or levels["contact_overdue"],
        "task": task,
    }
    if with_patient:
        view["patient_details"] = _patient_minimum(session, _ref(task, "for"))
    return view


def _focus(session: Session, task: dict) -> dict | None:
    request_id = _id_of(_ref(task, "focus"), "ServiceRequest")
    if request_id is None:
        return None
    try:
        return read(session, "ServiceRequest", request_id).content
    except NotFound:
        return None  # not visible to this caller (e.g. sensitive and the consent does not name its label)


def _patient_minimum(session: Session, reference: str | None) -> dict | None:
    patient_id = _id_of(reference, "Patient")
    if patient_id is None:
        return None
    try:
        patient = read(session, "Patient", patient_id).content
    except NotFound:
        return None
    name = (patient.get("name") or [{}])[0]
    language = next((coding.get("code") for c in patient.get("communication", []) if c.get("preferred")
                     for coding in (c.get("language") or {}).get("coding", [])[:1]), None)
    return {"id": patient["id"],
            "name": name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip() or None,
            "telecom": [{"system": t.get("system"), "value": t.get("value")} for t in patient.get("telecom", [])],
            "preferred_language": language}


# -- paging over a filtered search ---------------------------------------------------------------------------------


def _scan(session: Session, params: list[tuple[str, str]], keep: Callable[[dict], dict | None], *, limit: int,
          cursor: str | None, prefetch: Callable[[list[dict]], None] | None = None) -> tuple[list[dict], str | None]:
    """Return up to limit views of the matching Tasks that keep() accepts, with the cursor of the next page."""
    page = filtered_page(session, "Task", params, keep, limit=limit, cursor=cursor, prefetch=prefetch)
    return page.items, page.next_cursor


# -- coordinator side ----------------------------------------------------------------------------------------------


CLOSED_PLAN_STATUSES = frozenset({"completed", "revoked", "entered-in-error"})


def _open_plan_and_activity(session: Session, care_plan_id: str, activity_id: str) -> tuple[dict, dict]:
    plan, activity = _plan_and_activity(session, care_plan_id, activity_id)
    if plan.get("status") in CLOSED_PLAN_STATUSES:
        raise RuleViolation(f"CarePlan/{care_plan_id} is {plan['status']}: refer from an open care plan",
                            errors={"care_plan": [f"the plan is {plan['status']}"]})
    return plan, activity


def _plan_and_activity(session: Session, care_plan_id: str, activity_id: str) -> tuple[dict, dict]:
    plan = read(session, "CarePlan", care_plan_id).content
    for activity in plan.get("activity", []):
        if activity.get("id") == activity_id:
            return plan, activity
    raise NotFound(f"CarePlan/{care_plan_id} has no activity {activity_id}")


def _preferred_language(patient: dict) -> str | None:
    return next((coding.get("code") for c in patient.get("communication", []) if c.get("preferred")
                 for coding in (c.get("language") or {}).get("coding", [])[:1]), None)


def _require_in_directory(db: Database, *, partner: str, need: str, language: str | None,
                          service_id: str | None) -> dict:
    """Return the directory entry of the partner's service that covers the need (and language), or refuse."""
    cursor = None
    while True:
        page = partners.find(db, need=need, language=language, organization=partner, limit=100, cursor=cursor)
        for entry in page.items:
            organization = entry.get("organization") or {}
            if f"Organization/{organization.get('id')}" == partner and (service_id is None
                                                                         or entry["id"] == service_id):
                if entry.get("accepting_referrals") is False:
                    raise RuleViolation(f"{partner} does not accept referrals for {need} now",
                                        errors={"partner": ["not accepting referrals now"]})
                return entry
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    wanted = f"the need {need}" + (f" in the language {language}" if language else "")
    raise RuleViolation(f"{partner} has no service in the partner directory that covers {wanted}",
                        errors={"partner": [f"not in the partner directory for {wanted}"]})


def _need_coding(need: dict) -> dict:
    coding = {"system": need.get("system") or SERVICE_CATEGORY_SYSTEM, "code": need["code"]}
    if need.get("display"):
        coding["display"] = need["display"]
    return coding


def _changed_by(moment: datetime) -> list[dict]:
    current = context.current()
    if current is None:
        return []
    if current.caller.role == "partner" and current.caller.organization:
        who = {"reference": current.caller.organization}
    else:
        who = caller_reference()
    # The moment makes each record unique, so the timeline can tell a record this version wrote from a copy.
    return [{"url": CHANGED_BY_EXTENSION, "extension": [{"url": "by", "valueReference": who},
                                                        {"url": "at", "valueInstant": format_instant(moment)}]}] \
        if who else []


def _with_changed_by(task: dict, moment: datetime) -> dict:
    task["extension"] = [e for e in task.get("extension", []) if e.get("url") != CHANGED_BY_EXTENSION] \
        + _changed_by(moment)
    if not task["extension"]:
        del task["extension"]
    return task


def _note(text: str, moment: datetime) -> dict:
    note: dict = {"text": text, "time": _stamp(moment)}
    current = context.current()
    if current is not None and current.caller.role == "partner" and current.caller.organization:
        note["authorReference"] = {"reference": current.caller.organization}
    else:
        author = caller_reference()
        if author and "reference" in author:
            note["authorReference"] = author
    return note


def _send(session: Session, *, plan: dict, activity: dict, patient: str, partner: str, service_id: str | None,
          need: dict, reason: str, priority: str, consent: str | None, note: str | None, moment: datetime,
          replaces: str | None = None) -> tuple[dict, dict]:
    requester = caller_reference()
    coding = _need_coding(need)
    request: dict = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "category": [{"coding": [dict(coding)]}], "code": {"coding": [coding]},
        "priority": priority, "subject": {"reference": patient}, "authoredOn": _stamp(moment),
        "performer": [{"reference": partner}] + ([{"reference": f"HealthcareService/{service_id}"}]
                                                 if service_id else []),
        "reasonCode": [{"text": reason}],
        "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
    }
    if requester:
        request["requester"] = requester
    if consent:
        request["supportingInfo"] = [{"reference": consent}]
    if note:
        request["note"] = [_note(note, moment)]
    if replaces:
        request["replaces"] = [{"reference": replaces}]
    request = _create(session, request)
    task: dict = {
        "resourceType": "Task", "status": "requested", "intent": "order", "code": TASK_CODE,
        "priority": priority, "focus": {"reference": f"ServiceRequest/{request['id']}"},
        "for": {"reference": patient}, "authoredOn": _stamp(moment), "lastModified": _stamp(moment),
        "owner": {"reference": partner}, "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
        "description": coding.get("display") or need["code"],
        "extension": [{"url": ACTIVITY_ID_EXTENSION, "valueString": activity["id"]}],
    }
    canonical = ((activity.get("detail") or {}).get("instantiatesCanonical") or [None])[0]
    if canonical:
        task["instantiatesCanonical"] = canonical
    if requester:
        task["requester"] = requester
    if note:
        task["note"] = [_note(note, moment)]
    task = _create(session, _with_changed_by(task, moment))
    return request, task


def _link(session: Session, plan: dict, activity_id: str, *, add: str, remove: str | None = None) -> dict:
    for activity in plan.get("activity", []):
        if activity.get("id") == activity_id:
            links = [r for r in activity.get("outcomeReference", []) if r.get("reference") not in (add, remove)]
            activity["outcomeReference"] = [*links, {"reference": add}]
            return _save(session, plan)
    raise NotFound(f"CarePlan/{plan['id']} has no activity {activity_id}")


def refer(db: Database, *, care_plan_id: str, activity_id: str, partner: str, need: dict, reason: str,
          priority: str = "routine", service_id: str | None = None, language: str | None = None,
          consent: str | None = None, note: str | None = None, settings) -> dict:
    """Refer the patient of a care plan activity to a partner: ServiceRequest + Task, linked from the activity."""
    with db.reading() as session:
        plan, _activity = _open_plan_and_activity(session, care_plan_id, activity_id)
        patient = (plan.get("subject") or {}).get("reference")
        patient_id = _id_of(patient, "Patient")
        if patient_id is None:
            raise RuleViolation(f"CarePlan/{care_plan_id} is not about a patient",
                                errors={"care_plan": ["its subject is not a Patient"]})
        if language is None:
            language = _preferred_language(read(session, "Patient", patient_id).content)
    _require_in_directory(db, partner=partner, need=need["code"], language=language, service_id=service_id)
    with db.writing() as session:
        plan, activity = _open_plan_and_activity(session, care_plan_id, activity_id)
        if consent:
            _require_consent_of(session, consent, patient)
        moment = now()
        request, task = _send(session, plan=plan, activity=activity, patient=patient, partner=partner,
                              service_id=service_id, need=need, reason=reason, priority=priority, consent=consent,
                              note=note, moment=moment)
        _link(session, plan, activity_id, add=f"ServiceRequest/{request['id']}")
        return {**_view(session, task, [task], settings=settings, moment=moment), "service_request_resource": request,
                "timeline": timeline.build([task])}


def _require_consent_of(session: Session, consent: str, patient: str) -> None:
    consent_id = _id_of(consent, "Consent")
    if consent_id is None:
        raise RuleViolation("The consent must be a reference like Consent/<id>",
                            errors={"consent": ["Not a Consent reference."]})
    found = read(session, "Consent", consent_id).content
    if _ref(found, "patient") != patient:
        raise RuleViolation(f"{consent} is not the consent of {patient}",
                            errors={"consent": ["the consent of another patient"]})


def _task(session: Session, task_id: str, *, organization: str | None = None) -> dict:
    task = read(session, "Task", task_id).content
    if not is_referral(task) or (organization is not None and _ref(task, "owner") != organization):
        raise NotFound(f"Task/{task_id} is not known")  # never say whose it is
    return task


def list_referrals(db: Database, *, settings, patient: str | None = None, statuses: list[str] | None = None,
                   partner: str | None = None, overdue: bool | None = None, limit: int = 20,
                   cursor: str | None = None) -> tuple[list[dict], str | None]:
    """Return a page of referrals (default: the open ones) with age and service-level flags, oldest first."""
    params = [("intent", "order"), ("status", ",".join(statuses or OPEN))]
    if patient:
        params.append(("patient", patient))
    if partner:
        params.append(("owner", partner))
    moment = now()
    with db.reading() as session:
        prefetch, versions = _prefetched(session)

        def keep(task: dict) -> dict | None:
            # Stays here: is_referral looks at the types owner and focus point to; overdue is computed from the
            # version history and the agency's business days, which no search parameter holds.
            if not is_referral(task):
                return None
            view = _view(session, task, versions(task), settings=settings, moment=moment)
            if overdue is not None and view["overdue"] is not overdue:
                return None
            return view

        return _scan(session, params, keep, limit=limit, cursor=cursor, prefetch=prefetch)


def get_referral(db: Database, *, task_id: str, settings, organization: str | None = None) -> dict:
    """Return a referral with its ServiceRequest, service levels and readable timeline."""
    with db.reading() as session:
        task = _task(session, task_id, organization=organization)
        versions = versions_in(session, task_id=task_id)
        view = _view(session, task, versions, settings=settings, moment=now(),
                     with_patient=organization is not None)
        view["service_request_resource"] = _focus(session, task)
        view["timeline"] = timeline.build(versions)
        return view


def _transition(session: Session, task: dict, *, status: str | None = None, reason: dict | None = None,
                outputs: list[dict] | None = None, business: str | None = None, note: str | None = None,
                moment: datetime) -> dict:
    task = {k: v for k, v in task.items()}
    if status is not None:
        if status == task["status"]:
            raise RuleViolation(f"The referral is already {status}", errors={"status": [f"already {status}"]})
        task["status"] = status
        if reason is not None:
            task["statusReason"] = reason
        else:
            task.pop("statusReason", None)
    if outputs:
        task["output"] = [*task.get("output", []), *outputs]
    if business is not None:
        task["businessStatus"] = referral_codes.business_status(business)
    if note:
        task["note"] = [*task.get("note", []), _note(note, moment)]
    task["lastModified"] = _stamp(moment)
    return _save(session, _with_changed_by(task, moment))


def cancel(db: Database, *, task_id: str, reason: str, settings) -> dict:
    """Cancel a referral (requester side) with a reason; its ServiceRequest is revoked."""
    with db.writing() as session:
        task = _task(session, task_id)
        moment = now()
        task = _transition(session, task, status="cancelled", reason={"text": reason}, moment=moment)
        request = _focus(session, task)
        if request is not None and request.get("status") == "active":
            request["status"] = "revoked"
            _save(session, request)
        return _view(session, task, versions_in(session, task_id=task_id), settings=settings, moment=moment)


def re_refer(db: Database, *, task_id: str, partner: str, reason: str | None = None, service_id: str | None = None,
             language: str | None = None, priority: str | None = None, consent: str | None = None,
             note: str | None = None, settings) -> dict:
    """Refer again to another partner after a decline, failure or cancellation: a new ServiceRequest replaces the
    old one, a new Task goes to the partner, and the care plan activity links the new request."""
    with db.reading() as session:
        old_task = _task(session, task_id)
        old_request = _focus(session, old_task)
        plan_id = _id_of(care_plan_of(old_task), "CarePlan")
        activity_id = activity_id_of(old_task)
        if old_request is None or plan_id is None or activity_id is None:
            raise RuleViolation(f"Task/{task_id} is not linked to a care plan activity and a service request",
                                errors={"task": ["not a referral made from a care plan activity"]})
        if old_task["status"] not in REREFERABLE:
            raise RuleViolation(f"Only a declined, failed or cancelled referral can be re-referred; Task/{task_id} "
                                f"is {old_task['status']}", errors={"status": [
                                    "re-refer after rejected, failed or cancelled"]})
        if _ref(old_task, "owner") == partner:
            raise RuleViolation(f"Re-refer to another partner than {partner}",
                                errors={"partner": ["the same partner as the referral it replaces"]})
        need = _concept_view(old_request.get("code")) or {}
        if not need.get("code"):
            raise RuleViolation("The referral's service request names no need", errors={"need": ["missing"]})
        if language is None:
            patient_id = _id_of(_ref(old_task, "for"), "Patient")
            language = _preferred_language(read(session, "Patient", patient_id).content) if patient_id else None
    _require_in_directory(db, partner=partner, need=need["code"], language=language, service_id=service_id)
    with db.writing() as session:
        old_task = _task(session, task_id)
        if old_task["status"] not in REREFERABLE:  # it may have moved since the check above
            raise RuleViolation(f"Task/{task_id} is {old_task['status']}; it cannot be re-referred",
                                errors={"status": ["re-refer after rejected, failed or cancelled"]})
        old_request = _focus(session, old_task)
        plan, activity = _plan_and_activity(session, plan_id, activity_id)
        moment = now()
        if consent:  # the consent that permits disclosure to the new partner (the old one named the old partner)
            _require_consent_of(session, consent, _ref(old_task, "for"))
        old_reason = next((r.get("text") for r in old_request.get("reasonCode", []) if r.get("text")), None)
        request, task = _send(
            session, plan=plan, activity=activity, patient=_ref(old_task, "for"), partner=partner,
            service_id=service_id, need={"system": need.get("system"), "code": need["code"],
                                         "display": need.get("display")},
            reason=reason or old_reason or "Re-referral", priority=priority or old_request.get("priority", "routine"),
            consent=consent, note=note, moment=moment, replaces=f"ServiceRequest/{old_request['id']}")
        if old_request.get("status") == "active":
            old_request["status"] = "revoked"
            _save(session, old_request)
        _link(session, plan, activity_id, add=f"ServiceRequest/{request['id']}",
              remove=f"ServiceRequest/{old_request['id']}")
        view = _view(session, task, [task], settings=settings, moment=moment)
        return {**view, "replaces": f"Task/{task_id}", "service_request_resource": request}


# -- messages -------------------------------------------------------------------------------------------------------


def _message_view(message: dict) -> dict:
    return {"id": message["id"], "sent": message.get("sent"), "sender": _ref(message, "sender"),
            "recipients": [r.get("reference") for r in message.get("recipient", []) if r.get("reference")],
            "text": next((p.get("contentString") for p in message.get("payload", []) if "contentString" in p), None),
            "resource": message}


def list_messages(db: Database, *, task_id: str, organization: str | None = None) -> list[dict]:
    """Return the messages about a referral the caller may see, oldest first."""
    with db.reading() as session:
        _task(session, task_id, organization=organization)
        found = search_all(session, "Communication", [("part-of", f"Task/{task_id}")])
    found.sort(key=lambda m: ((m.get("meta") or {}).get("lastUpdated") or "", m["id"]))
    return [_message_view(m) for m in found]


def send_message(db: Database, *, task_id: str, text: str, organization: str | None = None) -> dict:
    """Send a message about a referral to the other side (partner -> requester, coordinator -> partner)."""
    with db.writing() as session:
        task = _task(session, task_id, organization=organization)
        moment = now()
        if organization is not None:
            sender, recipient = {"reference": organization}, task.get("requester")
        else:
            sender, recipient = caller_reference(), task.get("owner")
        if not recipient or "reference" not in recipient and "identifier" not in recipient:
            raise RuleViolation(f"Task/{task_id} names no one to write to", errors={"task": ["no recipient"]})
        message: dict = {
            "resourceType": "Communication", "status": "completed",
            "category": [{"coding": [{"system": referral_codes.COMMUNICATION_CATEGORY_SYSTEM,
                                      "code": MESSAGE_CATEGORY}]}],
            "partOf": [{"reference": f"Task/{task_id}"}], "about": [{"reference": f"Task/{task_id}"}],
            "subject": task.get("for"), "sent": format_instant(moment), "recipient": [recipient],
            "payload": [{"contentString": text}],
        }
        if sender:
            message["sender"] = sender
        if not message["subject"]:
            del message["subject"]
        return _message_view(_create(session, message))


# -- partner side ---------------------------------------------------------------------------------------------------


def _partner_organization(organization: str | None) -> str:
    if not organization:
        raise Forbidden("The partner API needs a token that names the partner's organisation")
    return organization


def inbox(db: Database, *, organization: str, settings, statuses: list[str] | None = None, limit: int = 20,
          cursor: str | None = None) -> dict:
    """Return the partner's referral inbox: counts (new, not updated within the SLA, overdue) and a page of items."""
    organization = _partner_organization(organization)
    moment = now()
    with db.reading() as session:
        everything = [t for t in search_all(session, "Task", [("owner", organization), ("intent", "order"),
                                                              ("status", ",".join(OPEN))]) if is_referral(t)]
        counts = {"new": 0, "not_updated": 0, "overdue": 0, "open": len(everything)}
        histories = versions_of(session, everything)  # one query, not one per open referral
        for task in everything:
            flags = sla_of(task, histories[task["id"]], settings=settings, moment=moment,
                           zone=zone_of(session, task, settings=settings))
            if task["status"] in NEW:
                counts["new"] += 1
            if flags["response_overdue"] or flags["contact_overdue"]:
                counts["overdue"] += 1
            if _not_updated(task, settings=settings, moment=moment, zone=zone_of(session, task, settings=settings)):
                counts["not_updated"] += 1

        prefetch, versions = _prefetched(session, histories)

        def keep(task: dict) -> dict | None:
            if not is_referral(task) or _ref(task, "owner") != organization:
                return None
            view = _view(session, task, versions(task), settings=settings, moment=moment, with_patient=True)
            view["not_updated"] = _not_updated(task, settings=settings, moment=moment,
                                               zone=zone_of(session, task, settings=settings))
            return view

        params = [("owner", organization), ("intent", "order"), ("status", ",".join(statuses or OPEN))]
        items, next_cursor = _scan(session, params, keep, limit=limit, cursor=cursor, prefetch=prefetch)
    return {"counts": counts, "items": items, "next_cursor": next_cursor}


def _not_updated(task: dict, *, settings, moment: datetime, zone: str) -> bool:
    """Tell whether an open referral has gone without any update for longer than the response service level."""
    last = (task.get("meta") or {}).get("lastUpdated")
    if task["status"] in FINAL or not last:
        return False
    days = getattr(settings, "sla_response_business_days", 2)
    holidays = getattr(settings, "holidays", frozenset())
    return sla.add_business_days(_instant(last), days, tz=zone, holidays=holidays) < moment


def act(db: Database, *, task_id: str, organization: str, action: str, reason: str | None = None,
        reason_code: str | None = None, outcome: str | None = None, note: str | None = None,
        procedure: str | None = None, business_status: str | None = None, settings) -> dict:
    """Carry out a partner's action on its referral: accept, decline, start, hold, resume, complete, fail, cancel,
    business-status. The store's state machine decides what is allowed; a refusal changes nothing."""
    organization = _partner_organization(organization)
    with db.writing() as session:
        task = _task(session, task_id, organization=organization)
        moment = now()
        if action == "accept":
            task = _transition(session, task, status="accepted", note=note, moment=moment)
        elif action == "decline":
            concept = referral_codes.decline_reason(reason_code, reason)
            task = _transition(session, task, status="rejected", reason=concept, note=note, moment=moment)
        elif action == "start":
            task = _transition(session, task, status="in-progress", note=note, moment=moment)
        elif action == "hold":
            task = _transition(session, task, status="on-hold", reason={"text": reason}, note=note, moment=moment)
        elif action == "resume":
            if task["status"] != "on-hold":
                raise RuleViolation(f"Only an on-hold referral can be resumed; this one is {task['status']}",
                                    errors={"status": ["resume applies to on-hold referrals"]})
            task = _transition(session, task, status="in-progress", note=note, moment=moment)
        elif action == "complete":
            outputs = [referral_codes.outcome_output(outcome)]
            if procedure:
                outputs.append({"type": outputs[0]["type"], "valueReference": {"reference": procedure}})
            task = _transition(session, task, status="completed", outputs=outputs, note=note, moment=moment)
        elif action == "fail":
            concept: dict = {"text": reason}
            if outcome:
                concept["coding"] = [{"system": referral_codes.OUTCOME_SYSTEM, "code": outcome,
                                      "display": referral_codes.OUTCOMES[outcome]}]
            task = _transition(session, task, status="failed", reason=concept, note=note, moment=moment)
        elif action == "cancel":
            task = _transition(session, task, status="cancelled", reason={"text": reason}, note=note, moment=moment)
        elif action == "business-status":
            if task["status"] in FINAL:
                raise RuleViolation(f"The referral is {task['status']}: a closed referral's progress cannot change",
                                    errors={"business_status": [f"the referral is {task['status']}"]})
            task = _transition(session, task, business=business_status, note=note, moment=moment)
        else:
            raise RuleViolation(f"Unknown action {action}", errors={"action": ["unknown"]})
        return _view(session, task, versions_in(session, task_id=task_id), settings=settings, moment=moment,
                     with_patient=True)
