"""Worklist and inbox at scale: every due item whatever the page size, and histories loaded in one query."""

from __future__ import annotations

import json
from datetime import date, timedelta

from careplan.coordination import store, worklist
from careplan.referrals import service as referrals
from careplan.store import repository

COORDINATOR = "Practitioner/coordinator-on-the-team"


def _plan_for(client, family: str) -> str:
    patient_id = client.post("/api/v1/patients", json={"family": family}).get_json()["patient"]["id"]
    response = client.post(f"/api/v1/patients/{patient_id}/care-plans", json={
        "title": f"Plan of {family}", "status": "active",
        "practices": [{"practice": "community-navigation"}, {"practice": "peer-support"}],
        "team": [{"role": "coordinator", "member": COORDINATOR}],
        "goals": [{"description": f"Goal of {family}", "target_date": (date.today() + timedelta(days=2)).isoformat()}],
        "concerns": [{"description": "No stable housing", "social_need": "housing-instability"}]})
    assert response.status_code == 201, response.get_json()
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": f"Patient/{patient_id}"}, "owner": {"reference": "Organization/harbour-shelter"},
            "description": f"Intake of {family}"}
    assert client.post("/fhir/Task", data=json.dumps(task), content_type="application/fhir+json").status_code == 201
    return patient_id


def test_worklist_keeps_every_item_past_a_search_page(client, database, catalogue, monkeypatch):
    patients = [_plan_for(client, family) for family in ("Ames", "Brook", "Carver", "Dupont", "Eddy")]
    other = client.post("/api/v1/patients", json={"family": "Else"}).get_json()["patient"]["id"]
    assert client.post(f"/api/v1/patients/{other}/care-plans", json={
        "title": "Not theirs", "status": "active", "practices": [{"practice": "peer-support"}],
        "team": [{"role": "coordinator", "member": "Practitioner/someone-else"}],
        "concerns": [{"description": "No stable housing", "social_need": "housing-instability"}]}).status_code == 201

    expected = worklist.build(database, coordinator=COORDINATOR, within_days=30)
    # Pages of two resources and OR-searches of two values: what a store of thousands of plans does at 1,000 / 100.
    monkeypatch.setattr(store, "MAX_SCAN", 2)
    monkeypatch.setattr(store, "ANY_CHUNK", 2)
    paged = worklist.build(database, coordinator=COORDINATOR, within_days=30)

    assert paged == expected
    items = [i for g in paged["groups"] for i in g["items"]]
    assert {i["patient"] for i in items} == {f"Patient/{p}" for p in patients}
    assert sorted(i["kind"] for i in items) == sorted(["follow-up"] * 10 + ["goal-review"] * 5 + ["referral"] * 5)


def test_histories_of_many_tasks_match_each_tasks_own_history(client, database):
    ids = []
    for family in ("Fox", "Gray"):
        task = {"resourceType": "Task", "status": "requested", "intent": "order",
                "owner": {"reference": "Organization/harbour-shelter"}, "description": family}
        created = client.post("/fhir/Task", data=json.dumps(task), content_type="application/fhir+json").get_json()
        created["status"] = "received"
        assert client.put(f"/fhir/Task/{created['id']}", data=json.dumps(created),
                          content_type="application/fhir+json").status_code == 200
        ids.append(created["id"])
    with database.reading() as session:
        together = repository.histories(session, resource_type="Task", resource_ids=ids)
        one_by_one = {task_id: referrals.versions_in(session, task_id=task_id) for task_id in ids}
    assert together == one_by_one
    assert [[v["status"] for v in together[i]] for i in ids] == [["requested", "received"]] * 2
