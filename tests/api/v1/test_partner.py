"""The partner side of referrals: the inbox, and the state machine over the API, table-driven."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.api.v1.referral_world import HARBOUR, world  # noqa: F401 - the fixture
from tests.factories import FHIR_JSON

BODIES = {
    "accept": {}, "decline": {"reason_code": "no-capacity", "reason": "Waitlist closed"}, "start": {},
    "hold": {"reason": "Client in hospital"}, "resume": {}, "complete": {"outcome": "got-help"},
    "fail": {"reason": "No answer after five calls", "outcome": "could-not-contact"},
    "cancel": {"reason": "Program closed"}, "business-status": {"business_status": "waitlisted"},
}
TARGET = {"accept": "accepted", "decline": "rejected", "start": "in-progress", "hold": "on-hold",
          "resume": "in-progress", "complete": "completed", "fail": "failed", "cancel": "cancelled"}
# The issue's table, as the partner drives it (business-status keeps the status of an open referral).
ALLOWED = {
    "requested": {"accept", "decline", "cancel", "business-status"},
    "accepted": {"start", "hold", "complete", "fail", "cancel", "business-status"},
    "in-progress": {"hold", "complete", "fail", "cancel", "business-status"},
    "on-hold": {"start", "resume", "complete", "fail", "cancel", "business-status"},
    "rejected": set(), "cancelled": set(), "completed": set(), "failed": set(), "entered-in-error": set(),
}
CANCELLABLE = {"requested", "accepted", "in-progress", "on-hold"}


def at_status(world, status: str) -> str:
    """Return the id of a new referral to Harbour driven to status through the APIs."""
    task_id = world.refer()["id"]
    steps = {"requested": [], "accepted": ["accept"], "in-progress": ["accept", "start"],
             "on-hold": ["accept", "hold"], "rejected": ["decline"], "completed": ["accept", "complete"],
             "failed": ["accept", "fail"], "cancelled": [], "entered-in-error": []}[status]
    for action in steps:
        response = world.act(HARBOUR, task_id, action, BODIES[action])
        assert response.status_code == 200, response.get_json()
    if status == "cancelled":
        assert world.coordinator.post(f"/api/v1/referrals/{task_id}/cancel",
                                      {"reason": "Moved away"}).status_code == 200
    if status == "entered-in-error":
        task = world.fhir(f"Task/{task_id}")
        task["status"] = "entered-in-error"
        response = world.client.put(f"/fhir/Task/{task_id}", data=json.dumps(task), content_type=FHIR_JSON,
                                    headers={"Authorization": f"Bearer {world.coordinator.token}"})
        assert response.status_code == 200, response.get_data(as_text=True)
    assert world.fhir(f"Task/{task_id}")["status"] == status
    return task_id


@pytest.mark.parametrize("source", list(ALLOWED))
def test_every_partner_transition_over_the_api(world, source):
    refused_id = at_status(world, source)
    version = world.fhir(f"Task/{refused_id}")["meta"]["versionId"]
    for action in sorted(set(BODIES) - ALLOWED[source]):
        response = world.act(HARBOUR, refused_id, action, BODIES[action])
        assert response.status_code == 422, (source, action, response.get_json())
        body = response.get_json()
        assert body["code"] == 422 and body["message"], (source, action)
        assert world.fhir(f"Task/{refused_id}")["meta"]["versionId"] == version, (source, action)
    for action in sorted(ALLOWED[source]):
        task_id = at_status(world, source)
        response = world.act(HARBOUR, task_id, action, BODIES[action])
        assert response.status_code == 200, (source, action, response.get_json())
        expected = TARGET.get(action, source)
        assert response.get_json()["status"] == expected == world.fhir(f"Task/{task_id}")["status"]

    cancel = world.coordinator.post(f"/api/v1/referrals/{refused_id}/cancel", {"reason": "No longer needed"})
    if source in CANCELLABLE:
        assert cancel.status_code == 200 and cancel.get_json()["status"] == "cancelled"
        assert world.fhir(f"Task/{refused_id}")["statusReason"]["text"] == "No longer needed"
    else:
        assert cancel.status_code == 422, cancel.get_json()
        assert "referral-final" in cancel.get_json()["message"] or "already" in cancel.get_json()["message"]


def test_refusals_name_the_rule(world):
    task_id = at_status(world, "completed")
    refused = world.act(HARBOUR, task_id, "hold", BODIES["hold"])
    assert refused.status_code == 422
    assert "[referral-final]" in refused.get_json()["message"]
    assert refused.get_json()["errors"]["json"]["Task.status"]
    task_id = at_status(world, "requested")
    early = world.act(HARBOUR, task_id, "complete", BODIES["complete"])
    assert early.status_code == 422 and "[referral-transition]" in early.get_json()["message"]
    resume = world.act(HARBOUR, task_id, "resume")
    assert resume.status_code == 422 and "on-hold" in resume.get_json()["message"]


def test_the_wrong_side_is_refused_on_fhir_too(world):
    task_id = at_status(world, "requested")
    task = world.fhir(f"Task/{task_id}")
    as_coordinator = world.client.put(f"/fhir/Task/{task_id}", data=json.dumps({**task, "status": "accepted"}),
                                      content_type=FHIR_JSON,
                                      headers={"Authorization": f"Bearer {world.coordinator.token}"})
    assert as_coordinator.status_code == 422
    assert "[referral-side]" in as_coordinator.get_json()["issue"][0]["diagnostics"]
    as_partner = world.client.put(f"/fhir/Task/{task_id}", data=json.dumps({**task, "status": "entered-in-error"}),
                                  content_type=FHIR_JSON,
                                  headers={"Authorization": f"Bearer {world.partners[HARBOUR].token}"})
    assert as_partner.status_code == 422
    # The coordinator API has no partner actions, and the partner API is for partners only.
    assert world.coordinator.post(f"/api/v1/partner/referrals/{task_id}/accept").status_code == 403
    assert world.partners[HARBOUR].post(f"/api/v1/referrals/{task_id}/cancel",
                                        {"reason": "x"}).status_code == 403


def test_missing_reason_or_outcome_is_a_field_error(world):
    task_id = at_status(world, "accepted")
    for action, field in (("complete", "outcome"), ("hold", "reason"), ("fail", "reason")):
        response = world.act(HARBOUR, task_id, action, {})
        assert response.status_code == 422, action
        assert field in response.get_json()["errors"]["json"], action
    requested = at_status(world, "requested")
    missing = world.act(HARBOUR, requested, "decline", {"reason": "Full"})
    assert missing.status_code == 422 and "reason_code" in missing.get_json()["errors"]["json"]
    unknown = world.act(HARBOUR, task_id, "complete", {"outcome": "teleported"})
    assert unknown.status_code == 422 and "outcome" in unknown.get_json()["errors"]["json"]
    extra = world.act(HARBOUR, task_id, "start", {"status": "completed"})
    assert extra.status_code == 422 and "status" in extra.get_json()["errors"]["json"]
    assert world.fhir(f"Task/{task_id}")["status"] == "accepted"


def test_inbox_counts_items_and_minimum_patient_data(world):
    old = world.referral_sent_at(datetime.now(timezone.utc) - timedelta(days=15))
    fresh = world.refer()["id"]
    accepted = at_status(world, "accepted")
    declined = at_status(world, "rejected")

    inbox = world.partners[HARBOUR].get("/api/v1/partner/referrals").get_json()
    assert inbox["counts"] == {"new": 2, "not_updated": 1, "overdue": 1, "open": 3}
    assert [i["id"] for i in inbox["items"]] == [old, fresh, accepted]
    by_id = {i["id"]: i for i in inbox["items"]}
    assert by_id[old]["overdue"] and by_id[old]["not_updated"] and by_id[old]["age_days"] == 15
    assert by_id[fresh]["overdue"] is False and by_id[fresh]["sla"]["response_due"]
    item = by_id[fresh]
    assert item["need"]["code"] == "housing" and item["priority"] == "urgent"
    assert item["patient_details"]["name"] == "Zoë Tremblay"
    assert item["patient_details"]["preferred_language"] == "fr-CA"
    text = json.dumps(inbox)
    assert "1988-04-02" not in text and "1234-567-890" not in text  # no birth date, no health card number

    only_accepted = world.partners[HARBOUR].get("/api/v1/partner/referrals?status=accepted").get_json()
    assert [i["id"] for i in only_accepted["items"]] == [accepted]
    closed = world.partners[HARBOUR].get("/api/v1/partner/referrals?status=rejected").get_json()
    assert [i["id"] for i in closed["items"]] == [declined]
    first = world.partners[HARBOUR].get("/api/v1/partner/referrals?limit=2").get_json()
    assert [i["id"] for i in first["items"]] == [old, fresh]
    second = world.partners[HARBOUR].get(first["next"]).get_json()
    assert [i["id"] for i in second["items"]] == [accepted] and second["next"] is None


def test_partner_detail_and_messages(world):
    task_id = world.refer()["id"]
    detail = world.partners[HARBOUR].get(f"/api/v1/partner/referrals/{task_id}").get_json()
    assert detail["status"] == "requested" and detail["service_request_resource"]["code"]["coding"][0]["code"] \
        == "housing"
    assert detail["timeline"][0]["to_status"] == "requested"
    asked = world.coordinator.post(f"/api/v1/referrals/{task_id}/messages", {"text": "Can you see her this week?"})
    assert asked.status_code == 201
    answered = world.partners[HARBOUR].post(f"/api/v1/partner/referrals/{task_id}/messages",
                                            {"text": "Thursday at 10"})
    assert answered.status_code == 201, answered.get_json()
    assert answered.get_json()["sender"] == HARBOUR
    assert answered.get_json()["recipients"] == [world.coordinator.reference]
    for caller, path in ((world.partners[HARBOUR], f"/api/v1/partner/referrals/{task_id}/messages"),
                         (world.coordinator, f"/api/v1/referrals/{task_id}/messages")):
        items = caller.get(path).get_json()["items"]
        assert [m["text"] for m in items] == ["Can you see her this week?", "Thursday at 10"]
    message = world.fhir(f"Communication/{answered.get_json()['id']}")
    assert message["partOf"] == [{"reference": f"Task/{task_id}"}] and message["sent"]


def test_referral_endpoints_conform_to_the_schema_with_data(app, world):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    world.referral_sent_at(datetime.now(timezone.utc) - timedelta(days=15))
    task_id = at_status(world, "accepted")
    world.coordinator.post(f"/api/v1/referrals/{task_id}/messages", {"text": "How is it going?"})
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    for caller, prefix in ((world.partners[HARBOUR], "/api/v1/partner/"), (world.coordinator, "/api/v1/referrals")):
        mine = [operation for operation in operations if operation.path.startswith(prefix)]
        assert len(mine) >= 7
        for operation in mine:
            @settings(max_examples=5, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            @given(case=operation.as_strategy())
            def conforms(case):
                response = case.call(headers={"Authorization": f"Bearer {caller.token}"})
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

            conforms()
