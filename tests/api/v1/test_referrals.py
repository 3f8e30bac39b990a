"""The coordinator side of referrals: refer from an activity, consent and break-glass, list, cancel, re-refer."""

from __future__ import annotations

import json

from tests.api.v1.referral_world import HARBOUR, LAKESIDE, PANTRY, world  # noqa: F401 - the fixture
from tests.factories import FHIR_JSON, disclosure_consent, partner_organization, partner_service

ACTIVITY_ID = "https://careplan.example.org/fhir/StructureDefinition/activity-id"
BREAK_GLASS = {"X-Careplan-Purpose-Of-Use": "BTG", "X-Careplan-Break-Glass-Reason": "Client at risk tonight"}


def _count(world, resource_type: str) -> int:
    return world.fhir(f"{resource_type}?_summary=count")["total"]


def test_refer_stores_request_and_task_and_links_the_activity(world):
    referral = world.refer(consent="Consent/consent-harbour", note="Prefers calls after 5 pm")
    assert referral["status"] == "requested" and referral["priority"] == "urgent"
    assert referral["need"]["code"] == "housing" and referral["age_days"] == 0
    assert referral["sla"]["response_due"] < referral["sla"]["contact_due"]

    task = world.fhir(f"Task/{referral['id']}")
    assert task["intent"] == "order" and task["owner"] == {"reference": HARBOUR}
    assert task["requester"] == {"reference": world.coordinator.reference}
    assert task["for"] == {"reference": f"Patient/{world.patient_id}"}
    assert task["basedOn"] == [{"reference": f"CarePlan/{world.plan_id}"}]
    assert {"url": ACTIVITY_ID, "valueString": world.activity_id} in task["extension"]
    assert task["instantiatesCanonical"].endswith("/housing-first")
    request = world.fhir(task["focus"]["reference"])
    assert request["status"] == "active" and request["intent"] == "order" and request["priority"] == "urgent"
    assert request["code"]["coding"][0]["code"] == "housing"
    assert request["performer"] == [{"reference": HARBOUR}]
    assert request["reasonCode"] == [{"text": "Sleeping rough since October"}]
    assert request["supportingInfo"] == [{"reference": "Consent/consent-harbour"}]
    assert request["note"][0]["text"] == "Prefers calls after 5 pm"
    plan = world.fhir(f"CarePlan/{world.plan_id}")
    activity = next(a for a in plan["activity"] if a["id"] == world.activity_id)
    assert activity["outcomeReference"] == [{"reference": task["focus"]["reference"]}]


def test_partner_must_cover_the_need_and_the_language(world):
    before = (_count(world, "ServiceRequest"), _count(world, "Task"))
    food = world.coordinator.post("/api/v1/referrals", _body(world, PANTRY))
    assert food.status_code == 422 and "partner directory" in food.get_json()["message"]
    assert food.get_json()["errors"] == {"json": {"partner": [
        "not in the partner directory for the need housing in the language fr-CA"]}}
    unknown = world.coordinator.post("/api/v1/referrals", _body(world, "Organization/nobody"))
    assert unknown.status_code == 422
    # An English-only agency does not serve a patient whose preferred language is French, unless asked for.
    world.client.put("/fhir/Organization/anglo", data=json.dumps(partner_organization("anglo", "Anglo")),
                     content_type=FHIR_JSON)
    world.client.put("/fhir/HealthcareService/anglo-housing", data=json.dumps(
        partner_service("anglo-housing", "anglo", languages=("en",))), content_type=FHIR_JSON)
    world.client.put("/fhir/Consent/consent-anglo", data=json.dumps(
        disclosure_consent("consent-anglo", world.patient_id, "Organization/anglo")), content_type=FHIR_JSON)
    assert world.coordinator.post("/api/v1/referrals", _body(world, "Organization/anglo")).status_code == 422
    english = world.coordinator.post("/api/v1/referrals", _body(world, "Organization/anglo", language="en"))
    assert english.status_code == 201, english.get_json()
    assert (_count(world, "ServiceRequest"), _count(world, "Task")) == (before[0] + 1, before[1] + 1)


def test_without_consent_nothing_is_sent_and_break_glass_is_audited(world):
    world.client.put("/fhir/Consent/consent-harbour", data=json.dumps(disclosure_consent(
        "consent-harbour", world.patient_id, HARBOUR, status="inactive")), content_type=FHIR_JSON)
    plan_version = world.fhir(f"CarePlan/{world.plan_id}")["meta"]["versionId"]
    refused = world.coordinator.post("/api/v1/referrals", _body(world, HARBOUR))
    assert refused.status_code == 422
    body = refused.get_json()
    assert "[referral-consent]" in body["message"] and "Organization/harbour" in body["message"]
    assert body["errors"]["json"]["Task.owner"]
    # One transaction: no ServiceRequest, no Task, the plan untouched.
    assert _count(world, "ServiceRequest") == 0 and _count(world, "Task") == 0
    assert world.fhir(f"CarePlan/{world.plan_id}")["meta"]["versionId"] == plan_version

    glass = world.coordinator.post("/api/v1/referrals", _body(world, HARBOUR), headers=BREAK_GLASS)
    assert glass.status_code == 201, glass.get_json()
    task_id = glass.get_json()["id"]
    events = world.fhir(f"AuditEvent?entity=Task/{task_id}/_history/1")
    writes = [e["resource"] for e in events.get("entry", [])
              if any(f"Task/{task_id}" in (x.get("what") or {}).get("reference", "")
                     for x in e["resource"].get("entity", []))]
    assert writes, "the break-glass write of the Task is audited"
    purposes = {c["code"] for a in writes[0]["agent"] for p in a.get("purposeOfUse", []) for c in p["coding"]}
    assert "BTG" in purposes
    assert "Client at risk tonight" in json.dumps(writes[0])
    # Other roles cannot break the glass.
    harbour = world.partners[HARBOUR].get("/api/v1/partner/referrals", headers=BREAK_GLASS)
    assert harbour.status_code == 403


def test_list_filters_and_pages(world):
    first = world.refer()["id"]
    second = world.refer(LAKESIDE)["id"]
    third = world.refer()["id"]
    world.act(HARBOUR, third, "accept")
    listed = world.coordinator.get("/api/v1/referrals").get_json()
    assert [i["id"] for i in listed["items"]] == [first, second, third] and listed["next"] is None
    assert [i["id"] for i in world.coordinator.get(f"/api/v1/referrals?partner={LAKESIDE}").get_json()["items"]] \
        == [second]
    assert [i["id"] for i in world.coordinator.get("/api/v1/referrals?status=accepted").get_json()["items"]] \
        == [third]
    mine = world.coordinator.get(f"/api/v1/referrals?patient=Patient/{world.patient_id}").get_json()["items"]
    assert len(mine) == 3
    assert world.coordinator.get("/api/v1/referrals?patient=Patient/someone-else").get_json()["items"] == []
    page = world.coordinator.get("/api/v1/referrals?limit=2").get_json()
    assert [i["id"] for i in page["items"]] == [first, second]
    rest = world.coordinator.get(page["next"]).get_json()
    assert [i["id"] for i in rest["items"]] == [third] and rest["next"] is None
    bad = world.coordinator.get("/api/v1/referrals?cursor=bm90LWEtY3Vyc29y")
    assert bad.status_code == 400 and bad.get_json()["errors"] == {"query": {"cursor": ["Not a valid cursor."]}}


def test_cancel_revokes_the_request_and_re_refer_replaces_it(world):
    referral = world.refer()
    task_id = referral["id"]
    early = world.coordinator.post(f"/api/v1/referrals/{task_id}/re-refer", {"partner": LAKESIDE})
    assert early.status_code == 422 and "re-refer" in json.dumps(early.get_json()["errors"])
    declined = world.act(HARBOUR, task_id, "decline", {"reason_code": "no-capacity", "reason": "Full until March"})
    assert declined.status_code == 200
    same = world.coordinator.post(f"/api/v1/referrals/{task_id}/re-refer", {"partner": HARBOUR})
    assert same.status_code == 422

    again = world.coordinator.post(f"/api/v1/referrals/{task_id}/re-refer",
                                   {"partner": LAKESIDE, "reason": "Harbour is full",
                                    "consent": "Consent/consent-lakeside"})
    assert again.status_code == 201, again.get_json()
    new = again.get_json()
    assert new["partner"] == LAKESIDE and new["status"] == "requested" and new["replaces"] == f"Task/{task_id}"
    new_request = world.fhir(new["service_request"])
    assert new_request["replaces"] == [{"reference": referral["service_request"]}]
    assert new_request["reasonCode"] == [{"text": "Harbour is full"}]
    assert new_request["supportingInfo"] == [{"reference": "Consent/consent-lakeside"}]
    assert world.fhir(referral["service_request"])["status"] == "revoked"
    plan = world.fhir(f"CarePlan/{world.plan_id}")
    activity = next(a for a in plan["activity"] if a["id"] == world.activity_id)
    assert activity["outcomeReference"] == [{"reference": new["service_request"]}]

    cancelled = world.coordinator.post(f"/api/v1/referrals/{new['id']}/cancel", {"reason": "Found a place"})
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    assert world.fhir(new["service_request"])["status"] == "revoked"
    timeline = world.coordinator.get(f"/api/v1/referrals/{new['id']}").get_json()["timeline"]
    assert timeline[-1]["to_status"] == "cancelled" and timeline[-1]["reason"]["text"] == "Found a place"
    assert timeline[-1]["by"] == world.coordinator.reference
    old = world.coordinator.get(f"/api/v1/referrals/{task_id}").get_json()["timeline"]
    assert old[-1]["reason"]["code"] == "no-capacity" and old[-1]["by"] == HARBOUR
    assert world.coordinator.post(f"/api/v1/referrals/{new['id']}/cancel", {}).status_code == 422


def test_bad_input_is_a_clear_error(world):
    missing = world.coordinator.post("/api/v1/referrals", {"care_plan": world.plan_id})
    assert missing.status_code == 422
    assert {"activity", "partner", "need", "reason"} <= set(missing.get_json()["errors"]["json"])
    wrong = world.coordinator.post("/api/v1/referrals", _body(world, "Practitioner/x", priority="whenever"))
    assert wrong.status_code == 422 and {"partner", "priority"} <= set(wrong.get_json()["errors"]["json"])
    assert world.coordinator.post("/api/v1/referrals", _body(world, HARBOUR, care_plan="nope")).status_code == 404
    assert world.coordinator.post("/api/v1/referrals", _body(world, HARBOUR, activity="nope")).status_code == 404
    other = world.coordinator.post("/api/v1/referrals", _body(world, HARBOUR, consent="Consent/consent-missing"))
    assert other.status_code == 404
    for path in ("/api/v1/referrals/nope", "/api/v1/referrals/nope/messages"):
        assert world.coordinator.get(path).status_code == 404
    assert world.coordinator.post("/api/v1/referrals/nope/cancel", {"reason": "x"}).status_code == 404
    # Only an open plan's open activity is referred from.
    assert world.client.post(f"/api/v1/care-plans/{world.plan_id}/status",
                             json={"status": "completed"}).status_code == 200
    closed = world.coordinator.post("/api/v1/referrals", _body(world, HARBOUR))
    assert closed.status_code == 422 and closed.get_json()["errors"]["json"]["care_plan"] == ["the plan is completed"]
    # A Task that is not a referral is not one here either.
    plain = world.client.post("/fhir/Task", data=json.dumps({
        "resourceType": "Task", "status": "requested", "intent": "plan",
        "for": {"reference": f"Patient/{world.patient_id}"}}), content_type=FHIR_JSON)
    assert world.coordinator.get(f"/api/v1/referrals/{plain.get_json()['id']}").status_code == 404


def _body(world, partner: str, **overrides) -> dict:
    from tests.factories import referral_request

    return referral_request(world.plan_id, world.activity_id, partner, **overrides)


def test_every_referral_endpoint_has_a_scope_rule(app):
    from careplan.auth.scopes import API_V1_RULES

    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".", 1)[0] not in ("v1_referrals", "v1_partner"):
            continue
        listed = dict(API_V1_RULES[rule.endpoint].methods) if rule.endpoint in API_V1_RULES else {}
        missing += [f"{method} {rule.rule}" for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
                    if method not in listed]
    assert not missing, missing


def test_partner_scopes_are_checked(world, token_for):
    task_id = world.refer()["id"]
    read_only = token_for(role="partner", organization=HARBOUR,
                          scopes="system/Task.rs system/ServiceRequest.rs system/Patient.rs")
    headers = {"Authorization": f"Bearer {read_only}"}
    assert world.client.get("/api/v1/partner/referrals", headers=headers).status_code == 200
    refused = world.client.post(f"/api/v1/partner/referrals/{task_id}/accept", json={}, headers=headers)
    assert refused.status_code == 403 and 'scope="system/Task.u"' in refused.headers["WWW-Authenticate"]
    assert world.fhir(f"Task/{task_id}")["status"] == "requested"


def test_timeline_does_not_credit_a_copied_record_to_the_wrong_actor(world):
    task_id = world.refer()["id"]
    assert world.act(HARBOUR, task_id, "accept").status_code == 200
    # An EHR on /fhir copies the Task back with a new status: the record of Harbour's acceptance comes with it.
    task = world.fhir(f"Task/{task_id}")
    task.update(status="cancelled", statusReason={"text": "Entered by the hospital"})
    assert world.client.put(f"/fhir/Task/{task_id}", data=json.dumps(task),
                            content_type=FHIR_JSON).status_code == 200
    timeline = world.coordinator.get(f"/api/v1/referrals/{task_id}").get_json()["timeline"]
    assert [(e["to_status"], e["by"]) for e in timeline] == [
        ("requested", world.coordinator.reference), ("accepted", HARBOUR), ("cancelled", None)]
