"""Isolation: a partner agency never sees another agency's referrals, through any endpoint."""

from __future__ import annotations

import json

from tests.api.v1.referral_world import HARBOUR, LAKESIDE, Caller, world  # noqa: F401 - the fixture
from tests.factories import disclosure_consent


def test_lakeside_never_sees_harbours_referral(world, token_for):
    referral = world.refer(note="Prefers calls after 5 pm")
    task_id, request = referral["id"], referral["service_request"]
    asked = world.coordinator.post(f"/api/v1/referrals/{task_id}/messages", {"text": "Can you see her?"})
    message_id = asked.get_json()["id"]
    assert world.partners[HARBOUR].post(f"/api/v1/partner/referrals/{task_id}/messages",
                                        {"text": "Yes"}).status_code == 201
    lakeside = world.partners[LAKESIDE]
    secrets = (task_id, request.split("/")[1], message_id, "Tremblay", "Sleeping rough")

    # The partner API: an empty inbox, and 404 (not 403) for everything about the referral.
    inbox = lakeside.get("/api/v1/partner/referrals").get_json()
    assert inbox["items"] == [] and inbox["counts"] == {"new": 0, "not_updated": 0, "overdue": 0, "open": 0}
    for status in ("requested", "accepted", "completed"):
        assert lakeside.get(f"/api/v1/partner/referrals?status={status}").get_json()["items"] == []
    not_found = [lakeside.get(f"/api/v1/partner/referrals/{task_id}"),
                 lakeside.get(f"/api/v1/partner/referrals/{task_id}/messages"),
                 lakeside.post(f"/api/v1/partner/referrals/{task_id}/messages", {"text": "Hello?"})]
    for action, body in (("accept", {}), ("decline", {"reason_code": "no-capacity"}), ("start", {}),
                         ("hold", {"reason": "x"}), ("resume", {}), ("complete", {"outcome": "got-help"}),
                         ("fail", {"reason": "x"}), ("cancel", {"reason": "x"}),
                         ("business-status", {"business_status": "waitlisted"})):
        not_found.append(world.act(LAKESIDE, task_id, action, body))
    for response in not_found:
        assert response.status_code == 404, response.get_json()
        assert not any(secret in response.get_data(as_text=True) for secret in secrets[1:])
    assert world.fhir(f"Task/{task_id}")["status"] == "requested"

    # /fhir reads and searches, also with every read and search scope: the policy, not the scopes, isolates.
    lakeside = Caller(world.client, token_for(role="partner", organization=LAKESIDE, scopes="system/*.rs"))
    for path in (f"/fhir/Task/{task_id}", f"/fhir/{request}", f"/fhir/Patient/{world.patient_id}",
                 f"/fhir/Communication/{message_id}", f"/fhir/Task/{task_id}/_history"):
        assert lakeside.get(path).status_code == 404, path
    for path in ("/fhir/Task", "/fhir/ServiceRequest", "/fhir/Patient", "/fhir/Communication",
                 f"/fhir/Task?_id={task_id}", f"/fhir/Communication?part-of=Task/{task_id}",
                 f"/fhir/Task?patient=Patient/{world.patient_id}&_include=Task:focus&_include=Task:patient",
                 "/fhir/ServiceRequest?_revinclude=Task:focus", "/fhir?_type=Task,ServiceRequest,Patient,Communication",
                 "/fhir/Task/_history", f"/fhir/Patient/{world.patient_id}/$everything"):
        response = lakeside.get(path)
        assert response.status_code in (200, 404), (path, response.get_data(as_text=True))
        found = json.dumps(response.get_json().get("entry", []))  # the self link echoes the query: not a leak
        assert found == "[]" and response.get_json().get("total", 0) == 0, (path, found)
        assert not any(secret in found for secret in secrets), path

    # Harbour itself sees its referral, and its patient's minimum.
    harbour = world.partners[HARBOUR]
    assert harbour.get(f"/fhir/Task/{task_id}").status_code == 200
    patient = harbour.get(f"/fhir/Patient/{world.patient_id}").get_json()
    assert "birthDate" not in patient and "identifier" not in patient
    assert [i["id"] for i in harbour.get("/api/v1/partner/referrals").get_json()["items"]] == [task_id]


def test_only_partners_use_the_partner_api(world):
    task_id = world.refer()["id"]
    for caller in (world.coordinator,):
        for path in ("/api/v1/partner/referrals", f"/api/v1/partner/referrals/{task_id}",
                     f"/api/v1/partner/referrals/{task_id}/messages"):
            response = caller.get(path)
            assert response.status_code == 403 and response.get_json()["code"] == 403
    assert world.client.get("/api/v1/partner/referrals").status_code == 403  # an admin is not an agency
    # A partner token is refused on the coordinator side, whatever its scopes.
    for path in ("/api/v1/referrals", f"/api/v1/referrals/{task_id}", f"/api/v1/referrals/{task_id}/messages"):
        assert world.partners[HARBOUR].get(path).status_code == 403


def test_a_sensitive_referral_needs_a_consent_naming_its_label(world):
    """A mental-health referral is labelled; Harbour's plain consent does not let it through."""
    plain = world.coordinator.post("/api/v1/referrals", {
        "care_plan": world.plan_id, "activity": world.activity_id, "partner": HARBOUR,
        "need": {"code": "housing"}, "reason": "Needs supported housing", "priority": "routine"})
    assert plain.status_code == 201  # the need is housing: no label, the plain consent suffices
    labelled = world.client.put("/fhir/HealthcareService/harbour-housing", data=json.dumps({
        "resourceType": "HealthcareService", "id": "harbour-housing", "active": True,
        "providedBy": {"reference": HARBOUR},
        "category": [{"coding": [{"system": "https://careplan.example.org/fhir/CodeSystem/service-category",
                                  "code": code}]} for code in ("housing", "mental-health")],
        "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}]}),
        content_type="application/fhir+json")
    assert labelled.status_code == 200
    sensitive = world.coordinator.post("/api/v1/referrals", {
        "care_plan": world.plan_id, "activity": world.activity_id, "partner": HARBOUR,
        "need": {"code": "mental-health"}, "reason": "Needs a psychiatrist", "priority": "routine"})
    assert sensitive.status_code == 422 and "[referral-consent]" in sensitive.get_json()["message"]
    named = disclosure_consent("consent-harbour-psy", world.patient_id, HARBOUR, labels=("PSY",))
    assert world.client.put("/fhir/Consent/consent-harbour-psy", data=json.dumps(named),
                            content_type="application/fhir+json").status_code == 201
    sent = world.coordinator.post("/api/v1/referrals", {
        "care_plan": world.plan_id, "activity": world.activity_id, "partner": HARBOUR,
        "need": {"code": "mental-health"}, "reason": "Needs a psychiatrist", "priority": "routine",
        "consent": "Consent/consent-harbour-psy"})
    assert sent.status_code == 201, sent.get_json()
    request = world.fhir(sent.get_json()["service_request"])
    assert {"PSY", "R"} <= {c["code"] for c in request["meta"]["security"]}
    seen = world.partners[HARBOUR].get(f"/api/v1/partner/referrals/{sent.get_json()['id']}").get_json()
    assert seen["need"]["code"] == "mental-health"
