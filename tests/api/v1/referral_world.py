"""A small world for the referral tests: a patient with an active care plan, three partner agencies in the
directory, the patient's consent to two of them, and real tokens for a coordinator and each agency."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from careplan.security import context
from careplan.store import service
from tests import factories

PARTNER_SCOPES = (
    "system/Task.rus system/ServiceRequest.rs system/Patient.rs system/Communication.crus system/Procedure.c")
HARBOUR, LAKESIDE, PANTRY = "Organization/harbour", "Organization/lakeside", "Organization/pantry"


class Caller:
    """One token's view of the API."""

    def __init__(self, client, token: str, reference: str | None = None):
        self.client, self.token, self.reference = client, token, reference

    def _headers(self, headers: dict | None) -> dict:
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, path: str, headers: dict | None = None):
        return self.client.get(path, headers=self._headers(headers))

    def post(self, path: str, body: dict | None = None, headers: dict | None = None):
        return self.client.post(path, json=body if body is not None else {}, headers=self._headers(headers))

    def put_fhir(self, resource: dict):
        return self.client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                               content_type=factories.FHIR_JSON, headers=self._headers(None))


@dataclass
class World:
    """What the referral tests work with."""

    client: object
    database: object
    patient_id: str
    plan_id: str
    activity_id: str
    coordinator: Caller
    partners: dict[str, Caller] = field(default_factory=dict)

    def refer(self, partner: str = HARBOUR, **overrides) -> dict:
        """Refer through the API as the coordinator; return the referral."""
        response = self.coordinator.post("/api/v1/referrals", factories.referral_request(
            self.plan_id, self.activity_id, partner, **overrides))
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def fhir(self, path: str) -> dict:
        """Read through /fhir as the admin."""
        response = self.client.get(f"/fhir/{path}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def act(self, partner: str, task_id: str, action: str, body: dict | None = None):
        """Carry out a partner action through the partner API."""
        return self.partners[partner].post(f"/api/v1/partner/referrals/{task_id}/{action}", body or {})

    def referral_sent_at(self, moment: datetime, partner: str = HARBOUR) -> str:
        """Store a referral (ServiceRequest + Task) that was sent at moment, as trusted system work; return its id."""
        assert context.current() is None
        with self.database.writing() as session:
            request = service.create_in(session, resource={
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "code": {"coding": [{"system": factories.SERVICE_CATEGORY_SYSTEM, "code": "housing"}]},
                "subject": {"reference": f"Patient/{self.patient_id}"}, "performer": [{"reference": partner}],
                "reasonCode": [{"text": "Old referral"}]}, now=moment).stored.content
            task = service.create_in(session, resource={
                "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
                "focus": {"reference": f"ServiceRequest/{request['id']}"},
                "for": {"reference": f"Patient/{self.patient_id}"}, "owner": {"reference": partner},
                "requester": {"reference": self.coordinator.reference},
                "authoredOn": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "basedOn": [{"reference": f"CarePlan/{self.plan_id}"}],
                "extension": [{"url": "https://careplan.example.org/fhir/StructureDefinition/activity-id",
                               "valueString": self.activity_id}]}, now=moment).stored.content
        return task["id"]


@pytest.fixture
def world(app, client, database, token_for, plan, enrolled) -> World:
    """Return the referral world (the care plan comes from the coordination API fixtures)."""
    patient_id = enrolled["patient"]["id"]
    for resource in (factories.partner_organization("harbour", "Harbour Shelter", timezone="America/Toronto"),
                     factories.partner_organization("lakeside", "Lakeside Housing", timezone="America/Vancouver"),
                     factories.partner_organization("pantry", "Pantry Food Bank"),
                     factories.partner_service("harbour-housing", "harbour", needs=("housing",)),
                     factories.partner_service("lakeside-housing", "lakeside", needs=("housing",)),
                     factories.partner_service("pantry-food", "pantry", needs=("food",), languages=("en",)),
                     factories.disclosure_consent("consent-harbour", patient_id, HARBOUR),
                     factories.disclosure_consent("consent-lakeside", patient_id, LAKESIDE)):
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                              content_type=factories.FHIR_JSON)
        assert response.status_code in (200, 201), response.get_data(as_text=True)
    coordinator_token = token_for(role="coordinator", organization="Organization/clinic")
    coordinator_id = _subject(app, coordinator_token)
    activity = next(a for a in plan["resource"]["activity"]
                    if a["detail"]["instantiatesCanonical"][0].endswith("/housing-first"))
    partners = {org: Caller(client, token_for(role="partner", organization=org, scopes=PARTNER_SCOPES), org)
                for org in (HARBOUR, LAKESIDE, PANTRY)}
    return World(client=client, database=database, patient_id=patient_id, plan_id=plan["id"],
                 activity_id=activity["id"],
                 coordinator=Caller(client, coordinator_token, f"Practitioner/{coordinator_id}"),
                 partners=partners)


def _subject(app, token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["sub"]
