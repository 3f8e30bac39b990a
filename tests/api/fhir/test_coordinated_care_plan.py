"""Coordinated care plans on /fhir: the profile, the catalogue and one active plan per patient, over HTTP."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from careplan import jsonutil
from careplan.practices import catalogue
from careplan.practices.tiers import tier_of
from tests.api.fhir.conftest import body, outcome
from tests.careplan.practices.support import BASE, coordinated_plan, load_catalogue
from tests.factories import FHIR_JSON


@pytest.fixture
def stocked(database):
    load_catalogue(database)
    return database


def test_a_conforming_plan_is_created_and_found_by_profile(stocked, fhir):
    response = fhir.create(coordinated_plan())
    assert response.status_code == 201, body(response)
    found = body(fhir.get(f"/fhir/CarePlan?patient=Patient/p1&_profile={BASE}/StructureDefinition/coordinated-care-plan"))
    assert found["total"] == 1


def test_a_plan_breaking_the_profile_answers_400_naming_the_element(stocked, fhir, token_for):
    plan = coordinated_plan()
    plan["activity"][1]["detail"].pop("scheduledTiming")
    ehr = {"Authorization": f"Bearer {token_for(role='ehr')}"}
    for headers in ({}, ehr):  # an EHR's write is held to the same profile as the coordinators'
        response = fhir.create(plan, headers=headers)
        assert response.status_code == 400
        (issue,) = outcome(response)["issue"]
        assert issue["code"] == "required"
        assert issue["expression"] == ["CarePlan.activity[1].detail.scheduledTiming"]


def test_a_practice_not_in_the_catalogue_answers_422(stocked, fhir):
    plan = coordinated_plan()
    plan["activity"][2]["detail"]["instantiatesCanonical"] = [f"{BASE}/PlanDefinition/made-up"]
    response = fhir.put("/fhir/CarePlan/cp1", {**plan, "id": "cp1"})
    assert response.status_code == 422
    (issue,) = outcome(response)["issue"]
    assert issue["code"] == "business-rule"
    assert issue["expression"] == ["CarePlan.activity[2].detail.instantiatesCanonical"]
    assert fhir.get("/fhir/CarePlan/cp1").status_code == 404


def test_a_second_active_plan_answers_422_naming_the_first(stocked, fhir):
    first = body(fhir.create(coordinated_plan()))
    response = fhir.create(coordinated_plan())
    assert response.status_code == 422
    (issue,) = outcome(response)["issue"]
    assert f"CarePlan/{first['id']}" in issue["diagnostics"]
    assert issue["code"] == "business-rule" and issue["expression"] == ["CarePlan.status"]
    draft = fhir.create(coordinated_plan(status="draft"))
    assert draft.status_code == 201
    activate = fhir.patch(f"/fhir/CarePlan/{body(draft)['id']}", [{"op": "replace", "path": "/status", "value": "active"}])
    assert activate.status_code == 422
    assert body(fhir.get("/fhir/CarePlan?patient=Patient/p1&status=active"))["total"] == 1


def test_a_transaction_with_two_active_plans_for_one_patient_stores_nothing(stocked, fhir):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:0000000{n}-0000-4000-8000-000000000000", "resource": coordinated_plan(),
         "request": {"method": "POST", "url": "CarePlan"}} for n in range(2)]}
    response = fhir.post("/fhir", bundle)
    assert response.status_code == 422
    assert body(fhir.get("/fhir/CarePlan?patient=Patient/p1"))["total"] == 0


def test_parallel_creates_of_an_active_plan_leave_exactly_one(stocked, app, fhir):
    for round_number in range(4):
        patient = f"Patient/race-{round_number}"
        barrier = threading.Barrier(2)

        def create(_):
            client = app.test_client()
            barrier.wait()
            return client.post("/fhir/CarePlan", data=jsonutil.dumps(coordinated_plan(subject={"reference": patient})),
                               content_type=FHIR_JSON)

        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = sorted(r.status_code for r in pool.map(create, range(2)))
        assert statuses == [201, 422], statuses
        assert body(fhir.get(f"/fhir/CarePlan?patient={patient}&status=active"))["total"] == 1


def test_an_admin_changes_a_tier_through_the_api_and_the_store_keeps_the_old_version(stocked, fhir, database):
    path = "/fhir/PlanDefinition/collaborate-in-hospital-on-care-plan"
    practice = body(fhir.get(path))
    assert tier_of(practice) == "emerging"
    practice_id = "collaborate-in-hospital-on-care-plan"

    def listed_tiers():
        with database.reading() as session:
            listed = catalogue.list_practices(session)
        return [p["id"] for p in listed], [tier_of(p) for p in listed]

    ids, tiers = listed_tiers()
    assert ids.index(practice_id) > tiers.index("emerging") > tiers.index("promising")

    for extension in practice["extension"]:
        if extension["url"] == f"{BASE}/StructureDefinition/practice-tier":
            extension["valueCoding"] = {"system": f"{BASE}/CodeSystem/practice-tier", "code": "recommended"}
        if extension["url"] == f"{BASE}/StructureDefinition/practice-tier-provenance":
            extension["valueString"] = "provisional: promoted by the programme after its 2026 review"
    response = fhir.put(path, practice)
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"2"'

    ids, tiers = listed_tiers()
    assert ids.index(practice_id) < tiers.index("promising")
    assert tiers[ids.index(practice_id)] == "recommended"
    assert tiers == sorted(tiers, key=["recommended", "promising", "emerging"].index)

    history = body(fhir.get(f"{path}/_history"))
    assert history["total"] == 2
    assert [tier_of(e["resource"]) for e in history["entry"]] == ["recommended", "emerging"]
    assert tier_of(body(fhir.get(f"{path}/_history/1"))) == "emerging"


PROFILE = f"{BASE}/StructureDefinition/coordinated-care-plan"


@pytest.mark.parametrize("first_profile, second_profile", [
    (f"{PROFILE}|1.0", PROFILE), (PROFILE, f"{PROFILE}|1.0"), (f"{PROFILE}|1.0", f"{PROFILE}|2.0")],
    ids=["versioned-first", "versioned-second", "both-versioned"])
def test_a_versioned_profile_does_not_escape_the_one_active_plan_rule(stocked, fhir, first_profile, second_profile):
    first = fhir.create(coordinated_plan(meta={"profile": [first_profile]}))
    assert first.status_code == 201, body(first)
    second = fhir.create(coordinated_plan(meta={"profile": [second_profile]}))
    assert second.status_code == 422
    (issue,) = outcome(second)["issue"]
    assert issue["code"] == "business-rule" and f"CarePlan/{body(first)['id']}" in issue["diagnostics"]
    draft = body(fhir.create(coordinated_plan(meta={"profile": [second_profile]}, status="draft")))
    activate = fhir.patch(f"/fhir/CarePlan/{draft['id']}", [{"op": "replace", "path": "/status", "value": "active"}])
    assert activate.status_code == 422
    assert body(fhir.get("/fhir/CarePlan?patient=Patient/p1&status=active"))["total"] == 1


def _bare_draft(**overrides) -> dict:
    """A coordinated care plan with only what a draft needs: subject, status, intent, category."""
    plan = coordinated_plan(status="draft")
    return {**{k: plan[k] for k in ("resourceType", "status", "intent", "category", "subject")}, **overrides}


def test_a_draft_needs_only_subject_status_intent_and_category(stocked, fhir):
    draft = fhir.create(_bare_draft())
    assert draft.status_code == 201, body(draft)
    unfinished = coordinated_plan(status="draft")
    unfinished["activity"][0]["detail"] = {"status": "not-started", "description": "Practice to be chosen"}
    assert fhir.create(unfinished).status_code == 201
    assert fhir.create(_bare_draft(status="revoked")).status_code == 201

    for broken, expression in ((_bare_draft(intent="proposal"), "CarePlan.intent"),
                               (_bare_draft(subject={"reference": "Group/g1"}), "CarePlan.subject"),
                               ({**_bare_draft(category=[{"text": "other"}]), "meta": {"profile": [PROFILE]}},
                                "CarePlan.category")):
        response = fhir.create(broken)
        assert response.status_code == 400, body(response)
        assert [i["expression"] for i in outcome(response)["issue"]] == [[expression]]

    made_up = coordinated_plan(status="draft")
    made_up["activity"][0]["detail"]["instantiatesCanonical"] = [f"{BASE}/PlanDefinition/made-up"]
    assert fhir.create(made_up).status_code == 422  # a practice it does name must be in the catalogue


@pytest.mark.parametrize("status", ["active", "on-hold", "completed"])
def test_the_full_profile_applies_when_a_draft_is_put_in_use(stocked, fhir, status):
    draft = body(fhir.create(_bare_draft()))
    response = fhir.patch(f"/fhir/CarePlan/{draft['id']}", [{"op": "replace", "path": "/status", "value": status}])
    assert response.status_code == 400
    expressions = {e for i in outcome(response)["issue"] for e in i["expression"]}
    assert expressions == {"CarePlan.meta.profile", "CarePlan.author", "CarePlan.careTeam", "CarePlan.addresses"}
    assert body(fhir.get(f"/fhir/CarePlan/{draft['id']}"))["status"] == "draft"
    complete = {**coordinated_plan(status=status), "id": draft["id"]}
    assert fhir.put(f"/fhir/CarePlan/{draft['id']}", complete).status_code == 200
