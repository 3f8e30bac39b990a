"""AuditEvents record who, for whom, what, whose, when and the outcome, and validate as R4."""

import base64
from datetime import datetime, timezone

from careplan.security.audit import Access, Actor, audit_event
from careplan.validation import validate_resource

WHEN = datetime(2026, 11, 22, 9, 30, tzinfo=timezone.utc)
PARTNER = Actor(subject="housing-app", issuer="https://careplan.example.org/oauth", role="partner",
                organization="Organization/housing", address="127.0.0.1")


def test_read_event_names_actor_organisation_patient_and_resource():
    event = audit_event(Access("read", PARTNER, WHEN, resources=("ServiceRequest/sr1",), patients=("Patient/p1",)))
    assert validate_resource(event) == "AuditEvent"
    assert event["action"] == "R" and event["outcome"] == "0" and event["recorded"] == "2026-11-22T09:30:00.000000Z"
    assert event["agent"][0]["who"]["identifier"]["value"] == "housing-app"
    assert event["agent"][1]["who"]["reference"] == "Organization/housing"
    assert [e["what"]["reference"] for e in event["entity"]] == ["Patient/p1", "ServiceRequest/sr1"]


def test_search_records_its_query_and_denial_its_outcome():
    event = audit_event(Access("search-type", PARTNER, WHEN, outcome="4", outcome_description="not permitted",
                               query="Patient?name=zo"))
    assert validate_resource(event) == "AuditEvent"
    assert event["action"] == "E" and event["outcome"] == "4"
    assert base64.b64decode(event["entity"][0]["query"]).decode() == "Patient?name=zo"


def test_break_glass_is_recorded_with_purpose_and_justification():
    coordinator = Actor(subject="u-17", issuer="https://idp.example.org", role="coordinator",
                        organization="Organization/hl")
    event = audit_event(Access("read", coordinator, WHEN, resources=("Condition/c1",), patients=("Patient/p1",),
                               purpose_of_use=("BTG",), break_glass_reason="client expressed suicidal intent"))
    assert validate_resource(event) == "AuditEvent"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert event["entity"][-1]["detail"][0]["valueString"] == "client expressed suicidal intent"
