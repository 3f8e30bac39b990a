"""Enrol, find, read and summarise patients through /api/v1."""

from __future__ import annotations

EPISODE_TYPE = "https://careplan.example.org/fhir/CodeSystem/episode-of-care-type|coordinated-care"


def test_enrol_stores_patient_and_identification_episode(client, enrolled):
    patient = enrolled["patient"]
    assert patient["display_name"] == "Zoë Tremblay"
    assert patient["preferred_language"] == "fr-CA"
    episode = client.get(f"/fhir/EpisodeOfCare?patient=Patient/{patient['id']}&type={EPISODE_TYPE}"
                         "&date=ge2026-11-20").get_json()
    assert episode["total"] == 1
    stored = episode["entry"][0]["resource"]
    assert stored["status"] == "active" and stored["period"] == {"start": "2026-11-20"}
    details = {e["url"]: e for e in stored["extension"][0]["extension"]}
    assert details["reason"]["valueString"] == "Three ED visits in 60 days"
    assert details["identifiedBy"]["valueString"] == "ED social worker"
    assert client.get(f"/fhir/Patient/{patient['id']}").get_json()["birthDate"] == "1988-04-02"


def test_find_by_name_and_identifier_pages_with_cursor(client, enrolled):
    for family in ("Tremblant", "Tremblais"):
        assert client.post("/api/v1/patients", json={"family": family}).status_code == 201
    first = client.get("/api/v1/patients?name=Trembl&limit=2").get_json()
    assert len(first["items"]) == 2 and first["next"]
    second = client.get(first["next"]).get_json()
    assert len(second["items"]) == 1 and second["next"] is None
    ids = {p["id"] for p in first["items"] + second["items"]}
    assert enrolled["patient"]["id"] in ids and len(ids) == 3
    found = client.get("/api/v1/patients?identifier=https://health.example.org/hcn|1234-567-890").get_json()
    assert [p["id"] for p in found["items"]] == [enrolled["patient"]["id"]]


def test_read_patient_and_unknown_patient(client, enrolled):
    patient_id = enrolled["patient"]["id"]
    assert client.get(f"/api/v1/patients/{patient_id}").get_json()["resource"]["id"] == patient_id
    missing = client.get("/api/v1/patients/nobody")
    assert missing.status_code == 404
    assert missing.get_json() == {"code": 404, "status": "Not Found", "message": "Patient/nobody is not known"}


def test_validation_errors_are_field_level_and_reject_unknown_fields(client):
    response = client.post("/api/v1/patients", json={"birth_date": "yesterday", "shoe_size": 43})
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity" and body["message"]
    assert set(body["errors"]["json"]) == {"family", "birth_date", "shoe_size"}
    assert body["errors"]["json"]["shoe_size"] == ["Unknown field."]


def test_bad_cursor_and_limit_answer_the_error_shape(client):
    assert client.get("/api/v1/patients?limit=0").get_json()["errors"]["query"]["limit"]
    response = client.get("/api/v1/patients?cursor=not-a-cursor")
    assert response.status_code == 400 and response.get_json()["code"] == 400
