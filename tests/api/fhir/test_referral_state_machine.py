"""The referral Task state machine over /fhir, table-driven: every (from, to, side) by PUT, PATCH and transaction.

One app, one set of tokens and one world (patient, partner agencies, ServiceRequest, consent) serve the whole
module; each case makes its own Task, walked to its starting status by trusted system work, so cases cannot see
each other's changes and the tables are emptied once, at the start of the module.
"""

from __future__ import annotations

import itertools
import re
import uuid

import pytest
from sqlalchemy import inspect, text

from api import create_app
from careplan import jsonutil
from careplan.db import Database
from careplan.models import Base
from careplan.referrals import codes, workflow
from careplan.store import service
from tests.api.fhir.conftest import body, outcome
from tests.careplan.practices.support import coordinated_plan, load_catalogue
from tests.conftest import issue_test_token
from tests.factories import FHIR_JSON

HOUSING, FOOD, CLINIC = "Organization/housing", "Organization/food", "Organization/clinic"
COORDINATOR = "Practitioner/coordinator-1"
LOOP = "Practitioner/coordinator-of-the-full-loop"
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
STATUSES = workflow.STATUSES
# How trusted system work reaches each starting status (each step is an allowed transition).
PATHS = {
    "draft": ["draft"], "requested": ["requested"], "received": ["requested", "received"],
    "accepted": ["requested", "accepted"], "rejected": ["requested", "rejected"],
    "cancelled": ["requested", "cancelled"], "entered-in-error": ["requested", "entered-in-error"],
    "in-progress": ["requested", "accepted", "in-progress"], "on-hold": ["requested", "accepted", "on-hold"],
    "completed": ["requested", "accepted", "completed"], "failed": ["requested", "accepted", "failed"],
}
SIDES = {"requester": workflow.REQUESTER, "partner": workflow.PARTNER, "admin": workflow.BOTH}


@pytest.fixture(autouse=True)
def _empty_tables():
    """Replace the suite's per-test emptying: the module's world is built once (see ``world``)."""
    yield


def _empty(database_url: str) -> None:
    database = Database(database_url)
    try:
        names = set(inspect(database.engine).get_table_names())
        tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name in names]
        with database.engine.begin() as connection:
            if database.is_postgresql:
                connection.execute(text(f"TRUNCATE {', '.join(t.name for t in tables)} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    connection.execute(table.delete())
    finally:
        database.dispose()


@pytest.fixture(scope="module")
def world(database_url):
    _empty(database_url)
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": database_url})
    database = app.extensions["careplan.database"]
    load_catalogue(database)
    with database.writing() as session:
        for resource in (
            {"resourceType": "Organization", "id": "housing", "name": "Harbour Housing"},
            {"resourceType": "Organization", "id": "food", "name": "Food Bank"},
            {"resourceType": "Patient", "id": "p1", "name": [{"family": "Tremblay"}]},
            {"resourceType": "ServiceRequest", "id": "sr-housing", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p1"}, "performer": [{"reference": HOUSING}],
             "code": {"text": "Supportive housing"}},
            {"resourceType": "Consent", "id": "consent-housing", "status": "active", "scope": SCOPE,
             "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
             "patient": {"reference": "Patient/p1"},
             "provision": {"type": "permit", "actor": [{"reference": {"reference": HOUSING}}]}},
        ):
            service.update_in(session, resource=resource, resource_id=resource["id"])
    tokens = {
        "requester": issue_test_token(app, role="coordinator", organization=CLINIC, scopes="user/*.cruds"),
        "partner": issue_test_token(app, role="partner", organization=HOUSING, scopes="user/*.cruds"),
        "other-partner": issue_test_token(app, role="partner", organization=FOOD, scopes="user/*.cruds"),
        "admin": issue_test_token(app, role="admin"),
        "ehr": issue_test_token(app, role="ehr"),
    }
    yield {"app": app, "client": app.test_client(), "database": database, "tokens": tokens}
    database.dispose()


def task(status: str, **extra) -> dict:
    """Return a referral Task in status, with the reason or outcome that status needs."""
    resource = {"resourceType": "Task", "status": status, "intent": "order", "code": {"text": "fulfill"},
                "focus": {"reference": "ServiceRequest/sr-housing"}, "for": {"reference": "Patient/p1"},
                "owner": {"reference": HOUSING}, "requester": {"reference": COORDINATOR},
                "authoredOn": "2026-11-27T16:00:00-05:00", **extra}
    return with_needs(resource)


def with_needs(resource: dict) -> dict:
    status = resource["status"]
    if status in workflow.REASON_REQUIRED:
        resource["statusReason"] = codes.decline_reason("no-capacity", "Full until January")
    if status == "completed":
        resource["output"] = [codes.outcome_output("got-help")]
    return resource


def make_task(world, status: str, **extra) -> str:
    """Store a Task walked to status by trusted system work; return its id."""
    return make_stored_task(world, status, **extra)["id"]


def make_stored_task(world, status: str, **extra) -> dict:
    """Store a Task walked to status by trusted system work; return it as stored."""
    task_id = f"t-{uuid.uuid4().hex[:12]}"
    with world["database"].writing() as session:
        for step in PATHS[status]:
            stored = service.update_in(session, resource={**task(step, **extra), "id": task_id},
                                       resource_id=task_id).stored
    return stored.content


def call(world, method: str, path: str, side: str, payload=None, content_type=FHIR_JSON):
    headers = {"Authorization": f"Bearer {world['tokens'][side]}"}
    client = world["client"]
    data = None if payload is None else jsonutil.dumps(payload)
    return client.open(path, method=method, data=data, content_type=content_type, headers=headers)


def current(world, task_id: str) -> dict:
    return body(call(world, "GET", f"/fhir/Task/{task_id}", "admin"))


def message(task_id: str) -> dict:
    return {"resourceType": "Communication", "status": "completed",
            "identifier": [{"system": "urn:test:bundle", "value": task_id}],
            "sender": {"reference": HOUSING}, "recipient": [{"reference": COORDINATOR}],
            "about": [{"reference": f"Task/{task_id}"}], "payload": [{"contentString": "Update"}]}


def send(world, method: str, side: str, before: dict, target: str):
    """Ask for the transition of Task before to target by method (PUT, PATCH or a transaction Bundle) as side."""
    task_id = before["id"]
    # A note makes every request a real change, so keeping the status is a version too.
    note = [{"text": f"{side} asks for {target} by {method}"}]
    changed = with_needs({**before, "status": target, "note": note})
    if method == "PUT":
        return call(world, "PUT", f"/fhir/Task/{task_id}", side, changed)
    if method == "PATCH":
        operations = [{"op": "replace", "path": "/status", "value": target},
                      {"op": "add", "path": "/note", "value": note}]
        operations += [{"op": "add", "path": f"/{key}", "value": changed[key]} for key in ("statusReason", "output")
                       if key in changed and changed[key] != before.get(key)]
        return call(world, "PATCH", f"/fhir/Task/{task_id}", side, operations, "application/json-patch+json")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": message(task_id),
         "request": {"method": "POST", "url": "Communication"}},
        {"fullUrl": f"Task/{task_id}", "resource": changed, "request": {"method": "PUT", "url": f"Task/{task_id}"}}]}
    return call(world, "POST", "/fhir", side, bundle)


def bundle_message_stored(world, task_id: str) -> bool:
    found = body(call(world, "GET", f"/fhir/Communication?identifier=urn:test:bundle|{task_id}", "admin"))
    return found.get("total", len(found.get("entry", []))) > 0


def rule_of(issue: dict) -> str | None:
    """Return the referral rule an OperationOutcome issue names (a Bundle prefixes the entry)."""
    found = re.search(r"\[(referral-[a-z-]+)\]", issue["diagnostics"])
    return found.group(1) if found else None


def expected(before: str | None, after: str, side: str) -> bool:
    who = workflow.ALLOWED.get(before, {}).get(after)
    return who is not None and (SIDES[side] == workflow.BOTH or SIDES[side] in who)


TRANSITIONS = [(b, a, s, m) for b, a in itertools.product(STATUSES, STATUSES)
               for s, m in itertools.product(("requester", "partner"), ("PUT", "PATCH", "transaction"))]
TRANSITIONS += [(b, a, "admin", "PUT") for b, a in itertools.product(STATUSES, STATUSES)]


@pytest.mark.parametrize(("before", "after", "side", "method"), TRANSITIONS,
                         ids=["-".join(case) for case in TRANSITIONS])
def test_transition(world, before, after, side, method):
    stored = make_stored_task(world, before)
    task_id, version = stored["id"], stored["meta"]["versionId"]
    response = send(world, method, side, stored, after)
    stored = current(world, task_id)
    if expected(before, after, side):
        assert response.status_code == 200, body(response)
        assert stored["status"] == after
        assert stored["meta"]["versionId"] != version
        if method == "transaction":
            assert bundle_message_stored(world, task_id)
    else:
        assert response.status_code == 422, body(response)
        (issue,) = outcome(response)["issue"]
        assert issue["code"] == "business-rule"
        assert rule_of(issue) in {"referral-transition", "referral-final", "referral-side"}
        # Nothing changed: not the Task, nor (for a transaction) the other entry of the Bundle.
        assert stored["meta"]["versionId"] == version and stored["status"] == before
        if method == "transaction":
            assert not bundle_message_stored(world, task_id)


CREATES = [(status, side, method) for status in STATUSES for side in ("requester", "admin", "ehr")
           for method in ("POST", "PUT", "transaction")]


@pytest.mark.parametrize(("status", "side", "method"), CREATES, ids=["-".join(case) for case in CREATES])
def test_create(world, status, side, method):
    task_id = f"t-{uuid.uuid4().hex[:12]}"
    resource = task(status)
    if method == "POST":
        response = call(world, "POST", "/fhir/Task", side, resource)
        task_id = body(response).get("id", task_id)
    elif method == "PUT":
        response = call(world, "PUT", f"/fhir/Task/{task_id}", side, {**resource, "id": task_id})
    else:
        response = call(world, "POST", "/fhir", side, {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": message(task_id),
             "request": {"method": "POST", "url": "Communication"}},
            {"resource": {**resource, "id": task_id}, "request": {"method": "PUT", "url": f"Task/{task_id}"}}]})
    if expected(None, status, "admin" if side == "admin" else "requester"):
        assert response.status_code in (200, 201), body(response)
        assert current(world, task_id)["status"] == status
    else:
        assert response.status_code == 422, body(response)
        assert rule_of(outcome(response)["issue"][0]) in {"referral-transition", "referral-side"}
        assert call(world, "GET", f"/fhir/Task/{task_id}", "admin").status_code == 404
        if method == "transaction":
            assert not bundle_message_stored(world, task_id)


def test_a_partner_cannot_create_a_referral_at_all(world):
    response = call(world, "POST", "/fhir/Task", "partner", task("received"))
    assert response.status_code == 403


def test_another_partner_cannot_move_a_referral_it_does_not_own(world):
    task_id = make_task(world, "requested")
    changed = {**current(world, task_id), "status": "accepted"}
    assert call(world, "PUT", f"/fhir/Task/{task_id}", "other-partner", changed).status_code == 404
    assert current(world, task_id)["status"] == "requested"


@pytest.mark.parametrize("target", sorted(workflow.REASON_REQUIRED))
def test_a_missing_reason_answers_422_and_changes_nothing(world, target):
    task_id = make_task(world, "accepted" if target != "rejected" else "requested")
    before = current(world, task_id)
    side = "requester" if target == "cancelled" else "partner"
    response = call(world, "PUT", f"/fhir/Task/{task_id}", side, {**before, "status": target})
    assert response.status_code == 422
    (issue,) = outcome(response)["issue"]
    assert issue["diagnostics"].startswith("[referral-reason]") and issue["expression"] == ["Task.statusReason"]
    assert current(world, task_id) == before


def test_completion_needs_an_outcome(world):
    task_id = make_task(world, "in-progress")
    before = current(world, task_id)
    response = call(world, "PATCH", f"/fhir/Task/{task_id}", "partner",
                    [{"op": "replace", "path": "/status", "value": "completed"}], "application/json-patch+json")
    assert response.status_code == 422
    assert outcome(response)["issue"][0]["diagnostics"].startswith("[referral-outcome]")
    procedure = {"resourceType": "Procedure", "status": "completed", "subject": {"reference": "Patient/p1"},
                 "code": {"text": "Housing intake"}}
    created = call(world, "POST", "/fhir/Procedure", "partner", procedure)
    assert created.status_code == 201, body(created)
    done = {**before, "status": "completed",
            "output": [{"type": {"text": "resulting activity"},
                        "valueReference": {"reference": f"Procedure/{body(created)['id']}"}}]}
    assert call(world, "PUT", f"/fhir/Task/{task_id}", "partner", done).status_code == 200


@pytest.mark.parametrize("element,value", [("owner", {"reference": FOOD}), ("for", {"reference": "Patient/p2"}),
                                           ("focus", {"reference": "ServiceRequest/other"}),
                                           ("requester", {"reference": "Practitioner/someone-else"})])
def test_who_and_what_of_a_sent_referral_cannot_change(world, element, value):
    task_id = make_task(world, "accepted")
    before = current(world, task_id)
    response = call(world, "PUT", f"/fhir/Task/{task_id}", "requester", {**before, element: value})
    assert response.status_code == 422
    (issue,) = outcome(response)["issue"]
    assert issue["diagnostics"].startswith("[referral-immutable]") and issue["expression"] == [f"Task.{element}"]


def test_a_business_status_update_keeps_the_status_and_is_kept_in_history(world):
    task_id = make_task(world, "accepted")
    before = current(world, task_id)
    contacted = {**before, "businessStatus": codes.business_status("trying-to-reach-client")}
    assert call(world, "PUT", f"/fhir/Task/{task_id}", "partner", contacted).status_code == 200
    history = body(call(world, "GET", f"/fhir/Task/{task_id}/_history", "requester"))
    assert [e["resource"]["status"] for e in history["entry"]] == ["accepted", "accepted", "requested"]


def test_sending_without_consent_is_refused_unless_the_glass_is_broken(world):
    draft_id = make_task(world, "draft", **{"for": {"reference": "Patient/p1"}, "owner": {"reference": FOOD}})
    draft = current(world, draft_id)
    response = call(world, "PUT", f"/fhir/Task/{draft_id}", "requester", {**draft, "status": "requested"})
    assert response.status_code == 422
    (issue,) = outcome(response)["issue"]
    assert issue["diagnostics"].startswith("[referral-consent]") and "Organization/food" in issue["diagnostics"]
    assert current(world, draft_id)["status"] == "draft"
    created = call(world, "POST", "/fhir/Task", "requester", {**task("requested"), "owner": {"reference": FOOD}})
    assert created.status_code == 422
    glass = {"X-Careplan-Purpose-Of-Use": "BTG", "X-Careplan-Break-Glass-Reason": "Client in crisis, shelter tonight"}
    response = world["client"].put(f"/fhir/Task/{draft_id}", data=jsonutil.dumps({**draft, "status": "requested"}),
                                   content_type=FHIR_JSON,
                                   headers={"Authorization": f"Bearer {world['tokens']['requester']}", **glass})
    assert response.status_code == 200, body(response)


def test_full_loop_updates_the_care_plan_activity_and_tells_the_coordinator(world):
    plan = coordinated_plan(status="draft")
    plan["activity"][0]["id"] = "act-referral"
    created = call(world, "POST", "/fhir/CarePlan", "requester", plan)
    assert created.status_code == 201, body(created)
    plan_id = body(created)["id"]
    referral = task("requested", basedOn=[{"reference": f"CarePlan/{plan_id}"}], requester={"reference": LOOP},
                    extension=[{"url": codes.ACTIVITY_ID_EXTENSION, "valueString": "act-referral"}])
    sent = call(world, "POST", "/fhir/Task", "requester", referral)
    assert sent.status_code == 201, body(sent)
    task_id = body(sent)["id"]
    for status in ("accepted", "in-progress"):
        step = call(world, "PATCH", f"/fhir/Task/{task_id}", "partner",
                    [{"op": "replace", "path": "/status", "value": status}], "application/json-patch+json")
        assert step.status_code == 200, body(step)
    done = call(world, "PATCH", f"/fhir/Task/{task_id}", "partner", [
        {"op": "replace", "path": "/status", "value": "completed"},
        {"op": "add", "path": "/output", "value": [codes.outcome_output("got-help")]}], "application/json-patch+json")
    assert done.status_code == 200, body(done)

    stored_plan = body(call(world, "GET", f"/fhir/CarePlan/{plan_id}", "requester"))
    activity = stored_plan["activity"][0]
    assert activity["detail"]["status"] == "completed"
    assert activity["progress"][-1]["text"] == "Referral to Organization/housing completed: Got help"
    assert [a["detail"]["status"] for a in stored_plan["activity"][1:]] == ["scheduled", "scheduled"]
    # The updated plan still keeps the coordinated care plan profile: a client can write it back unchanged.
    assert call(world, "PUT", f"/fhir/CarePlan/{plan_id}", "requester", stored_plan).status_code == 200

    category = f"{codes.COMMUNICATION_CATEGORY_SYSTEM}|referral-closed"
    told = body(call(world, "GET", f"/fhir/Communication?recipient={LOOP}&category={category}", "requester"))
    (notice,) = [e["resource"] for e in told["entry"]]
    assert notice["status"] == "completed" and notice["recipient"] == [{"reference": LOOP}]
    assert notice["about"] == [{"reference": f"Task/{task_id}"}]
    assert notice["category"][0]["coding"][0]["code"] == "referral-closed"
    assert "Got help" in notice["payload"][0]["contentString"]
    # The partner sees the notice it (through the server) sent, never the plan it may not edit.
    assert call(world, "GET", f"/fhir/Communication/{notice['id']}", "partner").status_code == 200
    assert call(world, "GET", f"/fhir/CarePlan/{plan_id}", "partner").status_code == 404


def test_a_decline_notes_the_reason_and_leaves_the_activity_open(world):
    plan = coordinated_plan(status="draft", subject={"reference": "Patient/p1"})
    plan["activity"][0]["outcomeReference"] = [{"reference": "ServiceRequest/sr-housing"}]
    created = call(world, "POST", "/fhir/CarePlan", "requester", plan)
    assert created.status_code == 201, body(created)
    task_id = make_task(world, "requested")
    declined = with_needs({**current(world, task_id), "status": "rejected"})
    assert call(world, "PUT", f"/fhir/Task/{task_id}", "partner", declined).status_code == 200
    stored_plan = body(call(world, "GET", f"/fhir/CarePlan/{body(created)['id']}", "admin"))
    activity = stored_plan["activity"][0]
    assert activity["detail"]["status"] == "scheduled"
    assert activity["progress"][-1]["text"] == ("Referral to Organization/housing declined: "
                                                "No capacity (full or waitlist closed) - Full until January")


def test_a_conditional_update_is_held_to_the_table(world):
    identifier = {"system": "urn:agency:referral", "value": uuid.uuid4().hex}
    task_id = make_task(world, "requested", identifier=[identifier])
    criteria = f"/fhir/Task?identifier={identifier['system']}|{identifier['value']}"
    before = current(world, task_id)
    response = call(world, "PUT", criteria, "partner", with_needs({**before, "status": "completed"}))
    assert response.status_code == 422 and rule_of(outcome(response)["issue"][0]) == "referral-transition"
    response = call(world, "PUT", criteria, "partner", {**before, "status": "accepted"})
    assert response.status_code == 200, body(response)
    assert current(world, task_id)["status"] == "accepted"
