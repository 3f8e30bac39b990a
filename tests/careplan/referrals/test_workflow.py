"""The referral rules in careplan.referrals.workflow, through the store functions every write path uses."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from careplan.errors import UnprocessableEntity
from careplan.practices import catalogue
from careplan.referrals import codes, workflow
from careplan.security import context
from careplan.security.audit import Actor
from careplan.security.policy import Caller
from careplan.store import service

HOUSING, FOOD = "Organization/housing", "Organization/food"
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
MENTAL_HEALTH = {"coding": [{"system": f"{codes.BASE}/CodeSystem/service-category", "code": "mental-health"}]}
COORDINATOR = Caller("coordinator", "Organization/clinic", frozenset({"Practitioner/c1"}))
PARTNER = Caller("partner", HOUSING)


@contextmanager
def acting(caller: Caller | None):
    if caller is None:
        yield
        return
    actor = Actor(subject="test", issuer="test", role=caller.role, organization=caller.organization)
    with context.acting_as(context.RequestContext(caller=caller, actor=actor)):
        yield


def put(database, resource, caller=None):
    with acting(caller), database.writing() as session:
        return service.update_in(session, resource=resource, resource_id=resource["id"]).stored.content


def consent(cid, provision, patient="p1"):
    return {"resourceType": "Consent", "id": cid, "status": "active", "scope": SCOPE,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "provision": provision}


def actor(reference):
    return [{"reference": {"reference": reference}}]


def referral(status="requested", **extra):
    resource = {"resourceType": "Task", "id": "t1", "status": status, "intent": "order",
                "focus": {"reference": "ServiceRequest/sr1"}, "for": {"reference": "Patient/p1"},
                "owner": {"reference": HOUSING}, "requester": {"reference": "Practitioner/c1"}, **extra}
    return resource


@pytest.fixture
def world(database):
    put(database, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Tremblay"}]})
    put(database, {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
                   "subject": {"reference": "Patient/p1"}, "performer": [{"reference": HOUSING}]})
    put(database, consent("permit-housing", {"type": "permit", "actor": actor(HOUSING)}))
    return database


# -- the table itself ---------------------------------------------------------------------------------


def test_the_table_follows_the_issue():
    allowed = {before: set(targets) - {before} for before, targets in workflow.ALLOWED.items()}
    assert allowed[None] == {"draft", "requested", "received"}
    assert allowed["draft"] == {"requested", "cancelled", "entered-in-error"}
    assert allowed["requested"] == {"received", "accepted", "rejected", "cancelled", "entered-in-error"}
    assert allowed["received"] == {"accepted", "rejected", "cancelled", "entered-in-error"}
    assert allowed["accepted"] == {"in-progress", "on-hold", "completed", "failed", "cancelled", "entered-in-error"}
    assert allowed["in-progress"] == {"on-hold", "completed", "failed", "cancelled", "entered-in-error"}
    assert allowed["on-hold"] == {"in-progress", "completed", "failed", "cancelled", "entered-in-error"}
    for final in workflow.FINAL - {"entered-in-error"}:
        assert allowed[final] == {"entered-in-error"} and final not in workflow.ALLOWED[final]
    assert workflow.ALLOWED["entered-in-error"] == {}
    # Sides: the requester side sets draft, requested and entered-in-error; the partner the rest; either cancels.
    for before, targets in workflow.ALLOWED.items():
        for after, sides in targets.items():
            if after == before:
                continue
            if after in ("draft", "requested", "entered-in-error"):
                assert sides == {"requester"}, (before, after)
            elif after == "cancelled":
                assert sides == {"requester", "partner"}
            else:
                assert sides == {"partner"}, (before, after)


def test_side_of_each_caller():
    task = referral()
    assert workflow.side_of(None, task) == "both"
    assert workflow.side_of(Caller("admin"), task) == "both"
    assert workflow.side_of(COORDINATOR, task) == "requester"
    assert workflow.side_of(Caller("ehr"), task) == "requester"
    assert workflow.side_of(PARTNER, task) == "partner"
    assert workflow.side_of(Caller("partner", FOOD), task) is None
    assert workflow.side_of(Caller("partner", None), task) is None


def test_allowed_targets_per_side():
    assert workflow.allowed_targets("requested", "partner") == ["requested", "received", "accepted", "rejected",
                                                                "cancelled"]
    assert workflow.allowed_targets("requested", "requester") == ["requested", "cancelled", "entered-in-error"]
    assert workflow.allowed_targets(None, "requester") == ["draft", "requested"]
    assert workflow.allowed_targets("completed", "partner") == []
    assert workflow.allowed_targets("completed", "both") == ["entered-in-error"]


def test_what_counts_as_a_referral():
    assert workflow.is_referral(referral())
    assert workflow.is_referral({**referral(), "owner": {"reference": "https://ehr.example/fhir/Organization/x"}})
    assert not workflow.is_referral({**referral(), "intent": "plan"})
    assert not workflow.is_referral({**referral(), "owner": {"reference": "Practitioner/x"}})
    assert not workflow.is_referral({**referral(), "focus": {"reference": "CarePlan/x"}})
    assert not workflow.is_referral({**referral(), "resourceType": "ServiceRequest"})
    assert not workflow.is_referral(None)


# -- rules through the store ----------------------------------------------------------------------------


def test_other_tasks_are_left_alone(world):
    put(world, {"resourceType": "Task", "id": "chore", "status": "completed", "intent": "order",
                "for": {"reference": "Patient/p1"}})
    put(world, {"resourceType": "Task", "id": "chore", "status": "ready", "intent": "order",
                "for": {"reference": "Patient/p1"}})


def test_a_referral_cannot_stop_being_one(world):
    put(world, referral())
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, {**referral(), "intent": "proposal"})
    assert raised.value.rule == "referral-structure"
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral(id="t2", **{"for": {"reference": "Group/g"}}))
    assert raised.value.rule == "referral-structure"


def test_a_final_referral_only_goes_to_entered_in_error(world):
    put(world, referral())
    put(world, referral("rejected", statusReason={"text": "Full"}), caller=PARTNER)
    put(world, referral("rejected", statusReason={"text": "Full"}), caller=PARTNER)  # identical: nothing to store
    for change in ({"note": [{"text": "later note"}]}, {"statusReason": {"text": "Changed my mind"}}):
        with pytest.raises(UnprocessableEntity) as raised:
            put(world, referral("rejected", **{"statusReason": {"text": "Full"}, **change}), caller=PARTNER)
        assert raised.value.rule == "referral-final"
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral("entered-in-error", statusReason={"text": "Full"}), caller=PARTNER)
    assert raised.value.rule == "referral-side"
    put(world, referral("entered-in-error", statusReason={"text": "Full"}), caller=COORDINATOR)


def test_reasons_accept_text_or_a_code(world):
    put(world, referral())
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral("rejected", statusReason={"text": "  "}), caller=PARTNER)
    assert raised.value.rule == "referral-reason"
    put(world, referral("rejected", statusReason=codes.decline_reason("no-capacity")), caller=PARTNER)


def test_outcomes_must_be_known_codes_or_references(world):
    put(world, referral())
    put(world, referral("accepted"), caller=PARTNER)
    bad = {"valueCodeableConcept": {"coding": [{"system": codes.OUTCOME_SYSTEM, "code": "made-up"}]}}
    for output, rule in (([], "referral-outcome"), ([bad], "referral-outcome"), ([{"type": {"text": "x"}}],
                                                                                 "referral-outcome")):
        with pytest.raises(UnprocessableEntity) as raised:
            put(world, referral("completed", output=output), caller=PARTNER)
        assert raised.value.rule == rule
    local = {"valueCodeableConcept": {"coding": [{"system": "urn:agency:outcomes", "code": "housed"}]}}
    put(world, referral("completed", output=[local]), caller=PARTNER)


def test_a_draft_may_still_be_readdressed_but_a_sent_referral_not(world):
    put(world, consent("permit-food", {"type": "permit", "actor": actor(FOOD)}))
    put(world, referral("draft"), caller=COORDINATOR)
    put(world, referral("draft", owner={"reference": FOOD}), caller=COORDINATOR)
    put(world, referral("requested", owner={"reference": FOOD}), caller=COORDINATOR)
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral("requested", owner={"reference": HOUSING}), caller=COORDINATOR)
    assert raised.value.rule == "referral-immutable" and "re-referral" in str(raised.value)


def test_the_requester_side_keeps_drafts_to_itself(world):
    put(world, referral("draft"), caller=COORDINATOR)
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral("draft", note=[{"text": "hi"}]), caller=PARTNER)
    assert raised.value.rule == "referral-side"


# -- consent ---------------------------------------------------------------------------------------------


def test_sending_needs_express_consent_even_for_trusted_system_work(world):
    put(world, {**consent("permit-housing", {"type": "permit", "actor": actor(HOUSING)}), "status": "inactive"})
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral())
    assert raised.value.rule == "referral-consent"
    assert raised.value.issues[0].expression == "Task.owner"
    put(world, referral("draft"))  # a draft goes nowhere yet


def test_a_deny_wins_and_the_glass_can_be_broken(world):
    put(world, consent("lockbox", {"type": "deny", "actor": actor(HOUSING)}))
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral(), caller=COORDINATOR)
    assert raised.value.rule == "referral-consent" and "denies" in str(raised.value)
    glass = Caller("coordinator", "Organization/clinic", break_glass=True)
    put(world, referral(), caller=glass)


def test_a_sensitive_service_request_needs_a_consent_naming_its_label(world):
    put(world, {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
                "subject": {"reference": "Patient/p1"}, "performer": [{"reference": HOUSING}],
                "category": [MENTAL_HEALTH]})
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral())
    assert raised.value.rule == "referral-consent" and "ServiceRequest" in str(raised.value)
    put(world, consent("permit-housing", {"type": "permit", "actor": actor(HOUSING), "provision": [
        {"type": "permit", "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                              "code": "PSY"}]}]}))
    put(world, referral())


def test_received_is_a_send_too(world):
    put(world, referral())
    put(world, {**consent("permit-housing", {"type": "permit", "actor": actor(HOUSING)}), "status": "inactive"})
    with pytest.raises(UnprocessableEntity) as raised:
        put(world, referral("received"))
    assert raised.value.rule == "referral-consent"
    put(world, referral("requested", note=[{"text": "still waiting"}]))  # a note is no new disclosure


# -- closing effects -------------------------------------------------------------------------------------


def test_closing_text_names_the_outcome_or_the_reason():
    done = referral("completed", output=[codes.outcome_output("could-not-contact")])
    assert workflow.closing_text(done) == "Referral to Organization/housing completed: Could not contact the client"
    cancelled = referral("cancelled", statusReason={"text": "Client moved away"},
                         owner={"reference": HOUSING, "display": "Harbour Housing"})
    assert workflow.closing_text(cancelled) == "Referral to Harbour Housing cancelled: Client moved away"
    procedure = referral("completed", output=[{"valueReference": {"reference": "Procedure/p9"}}])
    assert workflow.closing_text(procedure) == "Referral to Organization/housing completed: Procedure/p9"


def test_a_task_aimed_at_another_patients_plan_leaves_it_alone(world):
    put(world, {"resourceType": "CarePlan", "id": "other-plan", "status": "active", "intent": "plan",
                "subject": {"reference": "Patient/p2"},
                "activity": [{"id": "a1", "detail": {"status": "scheduled", "code": {"text": "x"}}}]})
    task = referral(basedOn=[{"reference": "CarePlan/other-plan"}],
                    extension=[{"url": codes.ACTIVITY_ID_EXTENSION, "valueString": "a1"}])
    put(world, task, caller=COORDINATOR)
    put(world, {**task, "status": "rejected", "statusReason": {"text": "No"}}, caller=PARTNER)
    with world.reading() as session:
        plan = service.read_in(session, resource_type="CarePlan", resource_id="other-plan").content
    assert "progress" not in plan["activity"][0]


def test_failures_note_the_plan_of_the_patient_found_without_based_on(world):
    put(world, {"resourceType": "CarePlan", "id": "plan", "status": "active", "intent": "plan",
                "subject": {"reference": "Patient/p1"},
                "activity": [{"reference": {"reference": "ServiceRequest/sr1"}},
                             {"detail": {"status": "in-progress", "code": {"text": "unrelated"}}}]})
    put(world, referral())
    put(world, referral("accepted"), caller=PARTNER)
    put(world, referral("failed", statusReason={"text": "Client did not come"}), caller=PARTNER)
    with world.reading() as session:
        plan = service.read_in(session, resource_type="CarePlan", resource_id="plan").content
        messages = [r.content for r in service.matches_in(session, resource_type="Communication",
                                                          criteria=[("recipient", "Practitioner/c1")])]
    assert plan["activity"][0]["progress"][0]["text"] == \
        "Referral to Organization/housing failed: Client did not come"
    assert "progress" not in plan["activity"][1]
    (message,) = messages
    assert message["about"] == [{"reference": "Task/t1"}] and message["sender"] == {"reference": HOUSING}


def test_no_requester_means_no_message_and_entered_in_error_tells_no_one(world):
    task = {k: v for k, v in referral().items() if k != "requester"}
    put(world, task)
    put(world, {**task, "status": "cancelled", "statusReason": {"text": "Duplicate"}})
    put(world, referral("draft", id="t2"))
    put(world, referral("entered-in-error", id="t2"))
    with world.reading() as session:
        assert service.matches_in(session, resource_type="Communication", criteria=[("status", "completed")]) == []


# -- code systems ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,concepts", [("referral-outcome", codes.OUTCOMES),
                                           ("referral-decline-reason", codes.DECLINE_REASONS),
                                           ("referral-business-status", codes.BUSINESS_STATUSES),
                                           ("referral-communication", codes.COMMUNICATION_CATEGORIES)])
def test_code_systems_match_the_catalogue_files(name, concepts):
    by_url = {r.get("url"): r for r in catalogue.load_files()}
    code_system = by_url[f"{codes.BASE}/CodeSystem/{name}"]
    assert {c["code"]: c["display"] for c in code_system["concept"]} == concepts
    assert code_system["count"] == len(concepts)
    value_set = by_url[f"{codes.BASE}/ValueSet/{name}"]
    assert value_set["compose"]["include"] == [{"system": code_system["url"]}]


def test_a_plan_that_no_longer_keeps_the_profile_does_not_block_the_outcome(world):
    from careplan.practices.profiles import CATEGORY_CODE, CATEGORY_SYSTEM, PROFILE_URL
    from careplan.store import repository

    # Stored before today's profile rules (no author, no care team): the store would refuse it now.
    legacy = {"resourceType": "CarePlan", "meta": {"profile": [PROFILE_URL]}, "status": "active", "intent": "plan",
              "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORY_CODE}]}],
              "subject": {"reference": "Patient/p1"},
              "activity": [{"id": "a1", "detail": {"status": "scheduled", "code": {"text": "housing"}}}]}
    with world.writing() as session:
        repository.insert(session, legacy, resource_id="legacy", now=repository.transaction_time(session),
                          method="PUT")
    task = referral(basedOn=[{"reference": "CarePlan/legacy"}],
                    extension=[{"url": codes.ACTIVITY_ID_EXTENSION, "valueString": "a1"}])
    put(world, task)
    put(world, {**task, "status": "accepted"}, caller=PARTNER)
    put(world, {**task, "status": "completed", "output": [codes.outcome_output("got-help")]}, caller=PARTNER)
    with world.reading() as session:
        plan = service.read_in(session, resource_type="CarePlan", resource_id="legacy")
        task_now = service.read_in(session, resource_type="Task", resource_id="t1").content
        messages = service.matches_in(session, resource_type="Communication",
                                      criteria=[("recipient", "Practitioner/c1")])
    assert plan.version_id == 1 and "progress" not in plan.content["activity"][0]
    assert task_now["status"] == "completed" and len(messages) == 1


def test_an_import_is_held_to_the_same_rules(world, tmp_path):
    from careplan.importer import Importer

    completed = referral("completed", output=[codes.outcome_output("got-help")])
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p9", "name": [{"family": "Imported"}]},
         "request": {"method": "PUT", "url": "Patient/p9"}},
        {"resource": completed, "request": {"method": "PUT", "url": "Task/t1"}}]}
    path = tmp_path / "referrals.json"
    path.write_text(json.dumps(bundle))
    failures = []
    summary = Importer(world, state_dir=tmp_path, on_failure=failures.append).run([path])
    (failure,) = failures
    assert failure.status == 422 and failure.entry == 1 and "referral workflow" in failure.reason
    assert failure.expression == "Bundle.entry[1].resource.status"
    assert summary.files == 1
    with world.reading() as session:
        assert service.matches_in(session, resource_type="Patient", criteria=[("_id", "p9")]) == []
