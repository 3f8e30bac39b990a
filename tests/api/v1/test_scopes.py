"""SMART scopes on /api/v1: each endpoint needs the scopes of the FHIR types it reads or writes, and no more."""

from __future__ import annotations

import pytest

from careplan.auth import scopes as smart_scopes
from careplan.auth.scopes import API_V1_RULES, Need, ScopeError, needs_for, per_method

ISSUE_5_BLUEPRINTS = ("v1_patients", "v1_care_plans", "v1_worklist", "v1_partners", "v1_practices")


def _as(token: str, **headers) -> dict:
    return {"Authorization": f"Bearer {token}", **headers}


def _refused_for_scope(response, *wanted: str) -> None:
    assert response.status_code == 403, response.get_json()
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    scope = challenge.split('scope="', 1)[1].rstrip('"').split()
    assert set(scope) == set(wanted), scope
    assert response.get_json()["code"] == 403


def test_every_method_of_the_issue_5_endpoints_has_a_rule(app):
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".", 1)[0] not in ISSUE_5_BLUEPRINTS:
            continue
        listed = dict(API_V1_RULES[rule.endpoint].methods) if rule.endpoint in API_V1_RULES else {}
        missing += [f"{method} {rule.rule}" for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
                    if method not in listed]
    assert not missing, missing
    assert len([e for e in API_V1_RULES if e.split(".", 1)[0] in ISSUE_5_BLUEPRINTS]) >= 18  # not vacuous


def test_a_read_only_client_reads_everything_and_writes_nothing(client, token_for, plan, enrolled, database):
    from tests.careplan.practices.support import load_catalogue

    load_catalogue(database)
    reader = _as(token_for(role="coordinator", scopes="system/*.rs"))
    patient_id, plan_id = enrolled["patient"]["id"], plan["id"]
    for path in ("/api/v1/patients", f"/api/v1/patients/{patient_id}", f"/api/v1/patients/{patient_id}/summary",
                 f"/api/v1/patients/{patient_id}/care-plans", f"/api/v1/care-plans/{plan_id}", "/api/v1/worklist",
                 "/api/v1/partners", "/api/v1/practices", "/api/v1/practices/peer-support"):
        response = client.get(path, headers=reader)
        assert response.status_code == 200, (path, response.get_json())

    _refused_for_scope(client.post("/api/v1/patients", json={"family": "Roy"}, headers=reader),
                       "system/Patient.c", "system/EpisodeOfCare.c")
    _refused_for_scope(client.post(f"/api/v1/patients/{patient_id}/care-plans", headers=reader,
                                   json={"title": "X", "practices": []}),
                       "system/CarePlan.c", "system/CareTeam.c", "system/Goal.c", "system/Condition.c")
    _refused_for_scope(client.post(f"/api/v1/care-plans/{plan_id}/status", json={"status": "on-hold"},
                                   headers=reader), "system/CarePlan.u")
    _refused_for_scope(client.post(f"/api/v1/care-plans/{plan_id}/goals", json={"description": "Walk"},
                                   headers=reader), "system/CarePlan.u", "system/Goal.c")
    _refused_for_scope(client.post(f"/api/v1/care-plans/{plan_id}/team-members", headers=reader,
                                   json={"role": "provider", "member": "Practitioner/gp"}), "system/CareTeam.u")
    admin_reader = _as(token_for(role="admin", scopes="system/*.rs"), **{"If-Match": 'W/"1"'})
    _refused_for_scope(client.patch("/api/v1/practices/peer-support", json={"tier": "recommended"},
                                    headers=admin_reader), "system/PlanDefinition.u")
    assert client.get(f"/api/v1/care-plans/{plan_id}").get_json()["status"] == "active"  # nothing was written


def test_exactly_the_listed_scopes_are_enough(client, token_for, plan):
    enrol = _as(token_for(role="coordinator", scopes="system/Patient.c system/EpisodeOfCare.c"))
    assert client.post("/api/v1/patients", json={"family": "Roy"}, headers=enrol).status_code == 201
    half = _as(token_for(role="coordinator", scopes="system/Patient.c"))
    _refused_for_scope(client.post("/api/v1/patients", json={"family": "Roy"}, headers=half),
                       "system/EpisodeOfCare.c")

    worklist = "system/CarePlan.s system/CareTeam.r system/Goal.s system/Task.s system/PlanDefinition.s"
    body = client.get("/api/v1/worklist?within_days=30&coordinator=Practitioner/test-admin",
                      headers=_as(token_for(role="coordinator", scopes=worklist)))
    assert body.status_code == 200 and len(body.get_json()["groups"]) == 4
    no_tasks = worklist.replace(" system/Task.s", "")
    _refused_for_scope(client.get("/api/v1/worklist", headers=_as(token_for(role="coordinator", scopes=no_tasks))),
                       "system/Task.s")

    directory = _as(token_for(role="coordinator",
                              scopes="system/HealthcareService.rs system/Organization.rs system/Location.rs"))
    assert client.get("/api/v1/partners", headers=directory).status_code == 200
    _refused_for_scope(client.get("/api/v1/worklist", headers=directory),
                       "system/CarePlan.s", "system/CareTeam.r", "system/Goal.s", "system/Task.s",
                       "system/PlanDefinition.s")


def test_an_endpoint_or_method_not_in_the_table_fails_closed(client, token_for, monkeypatch):
    reader = _as(token_for(role="coordinator", scopes="system/*.rs"))
    assert client.get("/api/v1/partners", headers=reader).status_code == 200
    monkeypatch.delitem(API_V1_RULES, "v1_partners.Partners")
    _refused_for_scope(client.get("/api/v1/partners", headers=reader), "system/*.cud")  # what it lacks of *.cruds
    monkeypatch.setitem(API_V1_RULES, "v1_partners.Partners", per_method(POST="HealthcareService.c"))
    _refused_for_scope(client.get("/api/v1/partners", headers=reader), "system/*.cud")  # GET is not named


def test_per_method_rules():
    rule = per_method(GET="Patient.sr CarePlan.s Patient.r", POST="Patient.c EpisodeOfCare.c")
    assert needs_for(rule, method="GET") == [Need("Patient", "rs"), Need("CarePlan", "s")]
    assert needs_for(rule, method="HEAD") == needs_for(rule, method="GET")
    assert needs_for(rule, method="post") == [Need("Patient", "c"), Need("EpisodeOfCare", "c")]
    assert needs_for(rule, method="DELETE") == [Need("*", "cruds")]
    assert needs_for(rule) == [Need("*", "cruds")]
    for malformed in ("Patient", "Patient.x", "patient.r", "Patient.read"):
        with pytest.raises(ScopeError):
            per_method(GET=malformed)
