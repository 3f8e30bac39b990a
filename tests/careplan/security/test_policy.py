"""The SQL access policy: partner scoping, consent grants, lock-box denies and break-glass."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from careplan.models import Resource
from careplan.security import grants, labels
from careplan.security.consent import Request, decide
from careplan.security.policy import Caller, redact, visible
from careplan.store import service

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
HOUSING, FOOD, CLINIC = "Organization/housing", "Organization/food", "Organization/clinic"
PARTNER = Caller("partner", HOUSING)
OTHER_PARTNER = Caller("partner", FOOD)
COORDINATOR = Caller("coordinator", CLINIC, frozenset({"Practitioner/c1"}))
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
ETH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}


def put(session, resource):
    resource = labels.apply(resource)
    stored = service.update_in(session, resource=resource, resource_id=resource["id"]).stored
    if resource["resourceType"] == "Consent":
        pk = session.scalar(select(Resource.pk).where(Resource.res_type == "Consent", Resource.res_id == resource["id"]))
        grants.replace(session, consent_pk=pk, consent=resource)
    return stored


def consent(cid, provision, patient="p1"):
    return {"resourceType": "Consent", "id": cid, "status": "active", "scope": SCOPE,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "provision": provision}


def actor(reference):
    return [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                  "code": "IRCP"}]}, "reference": {"reference": reference}}]


@pytest.fixture
def world(database):
    with database.writing() as session:
        for pid in ("p1", "p2"):
            put(session, {"resourceType": "Patient", "id": pid, "name": [{"family": "Doe"}],
                          "birthDate": "1980-01-01", "identifier": [{"system": "urn:mrn", "value": pid}]})
        put(session, {"resourceType": "ServiceRequest", "id": "sr-housing", "status": "active", "intent": "order",
                      "subject": {"reference": "Patient/p1"}, "performer": [{"reference": HOUSING}]})
        put(session, {"resourceType": "Task", "id": "task-housing", "status": "draft", "intent": "order",
                      "focus": {"reference": "ServiceRequest/sr-housing"}, "for": {"reference": "Patient/p1"},
                      "owner": {"reference": HOUSING}})
        put(session, {"resourceType": "ServiceRequest", "id": "sr-food", "status": "active", "intent": "order",
                      "subject": {"reference": "Patient/p2"}, "performer": [{"reference": FOOD}]})
        put(session, {"resourceType": "ServiceRequest", "id": "sr-sud", "status": "active", "intent": "order",
                      "subject": {"reference": "Patient/p1"}, "performer": [{"reference": HOUSING}],
                      "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F11.2"}]}]})
        put(session, {"resourceType": "Condition", "id": "c-sud", "subject": {"reference": "Patient/p1"},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F11.2"}]}})
        put(session, {"resourceType": "Organization", "id": "housing", "name": "Housing First"})
    return database


def seen(database, caller, resource_type):
    with database.reading() as session:
        return set(session.scalars(select(Resource.res_id).where(
            Resource.res_type == resource_type, Resource.deleted.is_(False),
            visible(caller, resource_type, now=NOW))))


def give(database, *consents):
    with database.writing() as session:
        for c in consents:
            put(session, c)


def test_partner_without_consent_sees_nothing_but_the_directory(world):
    assert seen(world, PARTNER, "ServiceRequest") == set()
    assert seen(world, PARTNER, "Patient") == set()
    assert seen(world, PARTNER, "Organization") == {"housing"}


def test_partner_with_consent_sees_its_referrals_and_their_patient_only(world):
    give(world, consent("c1", {"type": "permit", "actor": actor(HOUSING)}))
    assert seen(world, PARTNER, "ServiceRequest") == {"sr-housing"}  # not sr-sud: needs a label-specific permit
    assert seen(world, PARTNER, "Task") == {"task-housing"}
    assert seen(world, PARTNER, "Patient") == {"p1"}
    assert seen(world, PARTNER, "Condition") == set()
    assert seen(world, OTHER_PARTNER, "ServiceRequest") == set()


def test_label_specific_permit_releases_substance_use_referral(world):
    give(world, consent("c1", {"type": "permit", "actor": actor(HOUSING), "provision": [
        {"type": "permit", "securityLabel": [ETH]}]}))
    assert seen(world, PARTNER, "ServiceRequest") == {"sr-housing", "sr-sud"}


def test_nested_deny_withholds_a_class(world):
    give(world, consent("c1", {"type": "permit", "actor": actor(HOUSING), "provision": [
        {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Task"}]}]}))
    assert seen(world, PARTNER, "Task") == set()
    assert seen(world, PARTNER, "ServiceRequest") == {"sr-housing"}


def test_revoking_the_consent_takes_effect_at_once(world):
    give(world, consent("c1", {"type": "permit", "actor": actor(HOUSING)}))
    assert seen(world, PARTNER, "Task") == {"task-housing"}
    revoked = consent("c1", {"type": "permit", "actor": actor(HOUSING)})
    revoked["status"] = "inactive"
    give(world, revoked)
    assert seen(world, PARTNER, "Task") == set()


def test_consent_period_is_respected(world):
    give(world, consent("c1", {"type": "permit", "actor": actor(HOUSING),
                               "period": {"start": "2027-01-01"}}))
    assert seen(world, PARTNER, "Task") == set()


def test_coordinator_sees_everything_not_locked(world):
    assert seen(world, COORDINATOR, "Condition") == {"c-sud"}
    give(world, consent("lockbox", {"type": "deny", "actor": actor(CLINIC), "securityLabel": [ETH]}))
    assert seen(world, COORDINATOR, "Condition") == set()
    assert seen(world, COORDINATOR, "Patient") == {"p1", "p2"}
    glass = Caller("coordinator", CLINIC, frozenset({"Practitioner/c1"}), break_glass=True)
    assert seen(world, glass, "Condition") == {"c-sud"}


def test_nested_permit_inside_a_deny_is_an_exception(world):
    give(world, consent("c1", {"type": "deny", "actor": actor(CLINIC), "provision": [
        {"type": "permit", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Patient"}]}]}))
    assert seen(world, COORDINATOR, "Condition") == set()
    assert seen(world, COORDINATOR, "Patient") == {"p1", "p2"}


def test_audit_trail_is_for_admins(world):
    assert seen(world, COORDINATOR, "AuditEvent") == set()
    assert seen(world, Caller("admin"), "Condition") == {"c-sud"}


def test_partner_patient_view_is_minimal():
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}], "birthDate": "1980-01-01",
               "identifier": [{"value": "x"}], "telecom": [{"system": "phone", "value": "1"}]}
    assert set(redact(PARTNER, patient)) == {"resourceType", "id", "name", "telecom"}
    assert redact(COORDINATOR, patient) is patient


@pytest.mark.parametrize("provision, resource_type, resource_labels", [
    ({"type": "permit", "actor": actor(HOUSING)}, "ServiceRequest", labels.Labels()),
    ({"type": "permit", "actor": actor(HOUSING)}, "ServiceRequest", labels.Labels("R", frozenset({"ETH"}))),
    ({"type": "permit", "actor": actor(HOUSING), "securityLabel": [ETH]}, "Task", labels.Labels("R", frozenset({"ETH"}))),
    ({"type": "permit", "actor": actor(HOUSING), "provision": [
        {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Task"}]}]},
     "Task", labels.Labels()),
    ({"type": "deny", "actor": actor(HOUSING)}, "Task", labels.Labels()),
])
def test_sql_grants_agree_with_the_python_decision(database, provision, resource_type, resource_labels):
    security = []
    if resource_labels.sensitive:
        security = [{"system": labels.CONFIDENTIALITY_SYSTEM, "code": resource_labels.confidentiality}] + [
            {"system": labels.SENSITIVITY_SYSTEM, "code": c} for c in sorted(resource_labels.sensitivity)]
    resource = {"resourceType": resource_type, "id": "r1", "status": "requested" if resource_type == "Task" else "active",
                "intent": "order", ("for" if resource_type == "Task" else "subject"): {"reference": "Patient/p1"},
                ("owner" if resource_type == "Task" else "performer"): (
                    {"reference": HOUSING} if resource_type == "Task" else [{"reference": HOUSING}])}
    if security:
        resource["meta"] = {"security": security}
    document = consent("c1", provision)
    with database.writing() as session:
        put(session, resource)
        put(session, document)
    in_sql = seen(database, PARTNER, resource_type) == {"r1"}
    in_python = decide([document], Request(frozenset({HOUSING}), resource_type, resource_labels, NOW),
                       express_consent_required=True).permitted
    assert in_sql == in_python


@pytest.mark.parametrize("caller", [PARTNER, OTHER_PARTNER, COORDINATOR, Caller("ehr"), Caller("partner")])
def test_type_generic_condition_agrees_with_the_per_type_ones(world, caller):
    give(world, consent("c1", {"type": "permit", "actor": actor(HOUSING)}),
         consent("lockbox", {"type": "deny", "actor": actor(CLINIC), "securityLabel": [ETH]}))
    with world.reading() as session:
        generic = set(session.execute(select(Resource.res_type, Resource.res_id).where(
            Resource.deleted.is_(False), visible(caller, None, now=NOW))))
        types = set(session.scalars(select(Resource.res_type).distinct()))
    specific = {(t, i) for t in types for i in seen(world, caller, t)}
    assert generic == specific
