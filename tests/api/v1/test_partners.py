"""The partner directory over Organization and HealthcareService."""

from __future__ import annotations

import json

import pytest

SERVICE_CATEGORY = "https://careplan.example.org/fhir/CodeSystem/service-category"
ACCEPTING = "https://careplan.example.org/fhir/StructureDefinition/accepting-referrals"


def _put(client, resource: dict) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                          content_type="application/fhir+json")
    assert response.status_code in (200, 201), response.get_data(as_text=True)


@pytest.fixture
def directory(client) -> None:
    _put(client, {"resourceType": "Organization", "id": "harbour", "name": "Harbour Shelter"})
    _put(client, {"resourceType": "Location", "id": "ottawa", "name": "Ottawa",
                  "address": {"city": "Ottawa", "district": "Carleton"}})
    _put(client, {"resourceType": "Location", "id": "kingston", "name": "Kingston"})
    services = [
        ("harbour-housing", "housing", ["en", "fr-CA"], "ottawa", True, "About 3 weeks for intake"),
        ("harbour-food", "food", ["en"], "ottawa", False, None),
        ("lakeside-housing", "housing", ["en"], "kingston", None, None),
    ]
    for service_id, need, languages, area, accepting, waitlist in services:
        resource = {"resourceType": "HealthcareService", "id": service_id, "active": True,
                    "name": service_id.replace("-", " ").title(), "providedBy": {"reference": "Organization/harbour"},
                    "category": [{"coding": [{"system": SERVICE_CATEGORY, "code": need}]}],
                    "eligibility": [{"code": {"text": "Adults 18+"}}],
                    "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": c}]} for c in languages],
                    "coverageArea": [{"reference": f"Location/{area}"}]}
        if accepting is not None:
            resource["extension"] = [{"url": ACCEPTING, "valueBoolean": accepting}]
        if waitlist:
            resource["availabilityExceptions"] = waitlist
        _put(client, resource)


def test_find_by_need_language_and_area(client, directory):
    found = client.get("/api/v1/partners?need=housing&language=fr&area=ottawa").get_json()
    assert [p["id"] for p in found["items"]] == ["harbour-housing"]
    partner = found["items"][0]
    assert partner["organization"] == {"id": "harbour", "name": "Harbour Shelter"}
    assert partner["accepting_referrals"] is True and partner["waitlist"] == "About 3 weeks for intake"
    assert partner["areas"] == ["Ottawa", "Carleton"] and partner["eligibility"] == ["Adults 18+"]
    housing = client.get("/api/v1/partners?need=housing").get_json()
    assert [p["id"] for p in housing["items"]] == ["harbour-housing", "lakeside-housing"]
    assert client.get("/api/v1/partners?area=Carleton&need=food").get_json()["items"][0]["id"] == "harbour-food"


def test_accepting_filter_and_pages(client, directory):
    assert [p["id"] for p in client.get("/api/v1/partners?accepting=false").get_json()["items"]] == ["harbour-food"]
    first = client.get("/api/v1/partners?limit=2").get_json()
    assert [p["id"] for p in first["items"]] == ["harbour-food", "harbour-housing"]
    second = client.get(first["next"]).get_json()
    assert [p["id"] for p in second["items"]] == ["lakeside-housing"] and second["next"] is None
    bad = client.get("/api/v1/partners?cursor=bm90LWEtY3Vyc29y")
    assert bad.status_code == 400 and bad.get_json()["errors"] == {"query": {"cursor": ["Not a valid cursor."]}}
