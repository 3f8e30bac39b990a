"""The programme lead (issue 8): measures and dashboard as aggregates, the directory, and no patient data anywhere."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from careplan.auth.clients import DEFAULT_SCOPES
from careplan.models import utcnow
from careplan.reminders.models import Reminder
from tests.api.fhir.conftest import body, outcome
from tests.api.test_auth_oidc import _app
from tests.careplan.auth.support import LocalIssuer
from tests.factories import FHIR_JSON

MEASURE = "follow-ups-on-time"
PATIENTS = [f"lp{n}" for n in range(6)]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(client, database):
    """Six patients, each with a draft plan and a follow-up due this week (five on time), and one agency."""
    due = utcnow() - timedelta(hours=1)
    for number, patient in enumerate(PATIENTS):
        assert client.put(f"/fhir/Patient/{patient}", content_type=FHIR_JSON, data=json.dumps(
            {"resourceType": "Patient", "id": patient, "name": [{"family": "Leadtest"}], "gender": "female",
             "birthDate": "1980-01-01"})).status_code == 201
        assert client.put(f"/fhir/CarePlan/plan-{patient}", content_type=FHIR_JSON, data=json.dumps(
            {"resourceType": "CarePlan", "id": f"plan-{patient}", "status": "draft", "intent": "plan",
             "subject": {"reference": f"Patient/{patient}"}})).status_code == 201
        with database.writing() as session:
            session.add(Reminder(key=f"follow-up|CarePlan/plan-{patient}|act-1|{due.date()}", kind="follow-up",
                                 source=f"CarePlan/plan-{patient}#act-1", recipient="Practitioner/c1",
                                 patient=f"Patient/{patient}", tier="recommended", due_at=due, state="sent",
                                 payload={}, done_at=due - timedelta(minutes=5) if number < 5 else None))
    assert client.put("/fhir/Organization/harbour", content_type=FHIR_JSON, data=json.dumps(
        {"resourceType": "Organization", "id": "harbour", "name": "Harbour Shelter"})).status_code == 201
    measure = {"resourceType": "Measure", "id": MEASURE, "status": "active",
               "url": f"https://careplan.example.org/fhir/Measure/{MEASURE}"}
    assert client.put(f"/fhir/Measure/{MEASURE}", json=measure, content_type=FHIR_JSON).status_code == 201
    return due


@pytest.fixture
def lead(token_for) -> dict:
    """A programme lead client with the scopes it gets by default."""
    return bearer(token_for(role="lead", scopes=DEFAULT_SCOPES["lead"]))


@pytest.fixture
def lead_with_every_scope(token_for) -> dict:
    """A programme lead whose scopes would allow everything: only the role and the policy stand in the way."""
    return bearer(token_for(role="lead", scopes="system/*.cruds"))


def test_a_lead_reads_the_measures_as_aggregates(client, world, lead):
    listing = client.get("/api/v1/measures", headers=lead)
    assert listing.status_code == 200
    assert MEASURE in {m["id"] for m in listing.get_json()["measures"]}
    week = client.get(f"/api/v1/measures/{MEASURE}?period=week&start={world.date()}&end={world.date()}",
                      headers=lead)
    assert week.status_code == 200, week.get_json()
    [point] = week.get_json()["points"]
    assert (point["numerator"], point["denominator"], point["suppressed"]) == (5, 6, False)
    chart = client.get(f"/api/v1/measures/{MEASURE}/chart.svg?period=week", headers=lead)
    assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"


def test_the_drill_down_shows_a_lead_nobody(client, world, lead, lead_with_every_scope):
    query = f"/api/v1/measures/{MEASURE}/members?period=week&period_start={world.date()}"
    everyone = client.get(query)  # the admin sees the six, so what the lead gets is not empty by accident
    assert everyone.status_code == 200
    assert len(everyone.get_json()["denominator"]) == 6 and everyone.get_json()["hidden"] == 0
    refused = client.get(query, headers=lead)  # its default scopes do not reach patient data at all
    assert refused.status_code == 403 and "insufficient_scope" in refused.headers["WWW-Authenticate"]
    hidden = client.get(query, headers=lead_with_every_scope)  # and with every scope the policy hides them all
    assert hidden.status_code == 200, hidden.get_json()
    found = hidden.get_json()
    assert (found["numerator"], found["denominator"], found["excluded"], found["hidden"]) == ([], [], [], 6)
    assert "lp0" not in hidden.get_data(as_text=True)


def test_a_lead_sees_no_patient_data_on_fhir(client, world, lead, lead_with_every_scope):
    # default scopes: the scope check refuses patient types before the policy is asked
    refused = client.get("/fhir/Patient", headers=lead)
    assert refused.status_code == 403 and outcome(refused)["issue"][0]["code"] == "forbidden"
    # every scope: searches are empty and reads answer 404, as the policy answers other roles for unseen data
    for path in ("/fhir/Patient", "/fhir/CarePlan", "/fhir/Patient?_revinclude=CarePlan:subject",
                 "/fhir?_type=Patient,CarePlan", "/fhir/MeasureReport"):
        found = body(client.get(path, headers=lead_with_every_scope))
        assert found["resourceType"] == "Bundle" and found.get("total", 0) == 0 and not found.get("entry"), path
    assert client.get("/fhir/Patient/lp0", headers=lead_with_every_scope).status_code == 404
    assert client.get("/fhir/Patient/lp0/$everything", headers=lead_with_every_scope).status_code in (403, 404)
    assert body(client.get("/fhir/Patient?_id=lp0"))["total"] == 1  # it is there, for the admin
    text = client.get("/fhir/_history", headers=lead_with_every_scope).get_data(as_text=True)
    assert "Leadtest" not in text and "lp0" not in text


def test_a_lead_reads_the_directory_and_the_measures_on_fhir(client, world, lead):
    assert client.get("/fhir/Organization/harbour", headers=lead).status_code == 200
    assert body(client.get("/fhir/Organization", headers=lead))["total"] == 1
    assert client.get(f"/fhir/Measure/{MEASURE}", headers=lead).status_code == 200
    summary = client.get(f"/fhir/Measure/{MEASURE}/$evaluate-measure", headers=lead,
                         query_string={"periodStart": world.date().isoformat(),
                                       "periodEnd": world.date().isoformat()})
    assert summary.status_code == 200, summary.get_data(as_text=True)
    assert body(summary)["type"] == "summary"
    subjects = client.get(f"/fhir/Measure/{MEASURE}/$evaluate-measure", headers=lead,
                          query_string={"periodStart": "2026-01-01", "periodEnd": "2026-12-31",
                                        "reportType": "subject-list"})
    assert subjects.status_code == 403 and outcome(subjects)["issue"][0]["code"] == "forbidden"


def test_a_lead_writes_nothing(client, world, lead_with_every_scope):
    created = client.post("/fhir/Organization", headers=lead_with_every_scope, content_type=FHIR_JSON,
                          data=json.dumps({"resourceType": "Organization", "name": "Sneaky"}))
    assert created.status_code == 403 and "may not write" in outcome(created)["issue"][0]["diagnostics"]
    changed = client.put("/fhir/Organization/harbour", headers=lead_with_every_scope, content_type=FHIR_JSON,
                         data=json.dumps({"resourceType": "Organization", "id": "harbour", "name": "Renamed"}))
    assert changed.status_code == 403
    assert client.delete("/fhir/Organization/harbour", headers=lead_with_every_scope).status_code == 403
    # patient data it may not even see answers 404 (existence does not leak)
    assert client.delete("/fhir/Patient/lp0", headers=lead_with_every_scope).status_code == 404
    assert body(client.get("/fhir/Organization/harbour"))["name"] == "Harbour Shelter"


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/patients"), ("POST", "/api/v1/patients"), ("GET", "/api/v1/worklist"),
    ("GET", "/api/v1/referrals"), ("GET", "/api/v1/partners"), ("GET", "/api/v1/practices"),
    ("GET", "/api/v1/care-plans/plan-lp0"), ("GET", "/api/v1/partner/referrals")])
def test_the_coordination_api_refuses_a_lead(client, lead_with_every_scope, method, path):
    response = client.open(path, method=method, headers=lead_with_every_scope, json={})
    assert response.status_code == 403, (path, response.get_json())
    assert response.get_json()["code"] == 403


def test_a_lead_sees_the_dashboard(client, world, lead):
    response = client.get("/dashboard?stratifier=tier", headers=lead)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert 'id="measure-follow-ups-on-time"' in html and "<svg" in html
    assert "Leadtest" not in html and "lp0" not in html


@pytest.fixture
def issuer():
    local = LocalIssuer()
    yield local
    local.close()


def test_a_person_signed_in_as_a_programme_lead(monkeypatch, database_url, issuer):
    app = _app(monkeypatch, database_url, issuer, role_map={"programme-lead": "lead"},
               default_scopes=DEFAULT_SCOPES["lead"].replace("system/", "user/"))
    try:
        token = issuer.token(roles=["staff", "programme-lead"], org="ontario-health")
        client = app.test_client()
        assert client.get("/api/v1/whoami", headers=bearer(token)).get_json()["role"] == "lead"
        assert client.get("/dashboard", headers=bearer(token)).status_code == 200
        assert client.get("/api/v1/measures", headers=bearer(token)).status_code == 200
        assert client.get("/api/v1/worklist", headers=bearer(token)).status_code == 403
        assert client.get("/fhir/Patient", headers=bearer(token)).status_code == 403
    finally:
        app.extensions["careplan.database"].dispose()
