"""Fixtures of the coordination API tests: practices in the catalogue, an enrolled patient."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

TIER_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/practice-tier"
EXT = "https://careplan.example.org/fhir/StructureDefinition/"


def store_practice(client, name: str, tier: str | None, *, cadence_days: int = 14) -> dict:
    """Store a catalogue practice (a PlanDefinition per the issue 5 contract) through /fhir and return it."""
    extensions = [{"url": EXT + "practice-follow-up-cadence",
                   "valueTiming": {"repeat": {"frequency": 1, "period": cadence_days, "periodUnit": "d"}}}]
    if tier:
        extensions.insert(0, {"url": EXT + "practice-tier", "valueCoding": {"system": TIER_SYSTEM, "code": tier}})
    resource = {"resourceType": "PlanDefinition", "url": f"https://careplan.example.org/fhir/PlanDefinition/{name}",
                "name": name.replace("-", "_"), "title": name.replace("-", " ").capitalize(), "status": "active",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type",
                                     "code": "clinical-protocol"}]},
                "extension": extensions}
    response = client.put(f"/fhir/PlanDefinition/{name}", data=json.dumps({**resource, "id": name}),
                          content_type="application/fhir+json")
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture
def enrolled(client) -> dict:
    """Return the enrolment of a patient made through the API."""
    response = client.post("/api/v1/patients", json={
        "family": "Tremblay", "given": ["Zoë"], "birth_date": "1988-04-02", "preferred_language": "fr-CA",
        "identifiers": [{"system": "https://health.example.org/hcn", "value": "1234-567-890"}],
        "identification": {"identified_by": "ED social worker", "identified_on": "2026-11-20",
                           "reason": "Three ED visits in 60 days"}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def add_practice(client):
    """Return a function that stores a catalogue practice: add_practice(name, tier, cadence_days=14)."""
    return lambda name, tier, **kwargs: store_practice(client, name, tier, **kwargs)


@pytest.fixture
def catalogue(add_practice) -> dict:
    """Return three practices, one of each tier, keyed by tier."""
    return {tier: add_practice(name, tier, cadence_days=days) for tier, name, days in (
        ("emerging", "community-navigation", 7), ("recommended", "peer-support", 14),
        ("promising", "housing-first", 21))}


@pytest.fixture
def plan(client, enrolled, catalogue) -> dict:
    """Return an active coordinated care plan built from the three practices, as the API answered it."""
    patient_id = enrolled["patient"]["id"]
    response = client.post(f"/api/v1/patients/{patient_id}/care-plans", json={
        "title": "Stable housing and recovery", "status": "active",
        "practices": [{"practice": "community-navigation"},
                      {"practice": catalogue["recommended"]["url"], "performer": "Practitioner/peer-1"},
                      {"practice": "PlanDefinition/housing-first", "cadence_days": 10}],
        "team": [{"role": "coordinator", "member": "Practitioner/test-admin"},
                 {"role": "trusted-support-person", "member": "RelatedPerson/sister", "display": "Marie"},
                 {"role": "partner-agency", "member": "Organization/harbour-shelter"}],
        "goals": [{"description": "Have my own place by spring",
                   "target_date": (date.today() + timedelta(days=3)).isoformat()}],
        "concerns": [{"description": "No stable housing", "social_need": "housing-instability"}]})
    assert response.status_code == 201, response.get_json()
    return response.get_json()
