"""The programme lead's policy (directory and Measures only) and the curated catalogue rule in the store's guard."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from careplan.errors import FhirError, Forbidden
from careplan.models import Resource
from careplan.security import context, guard
from careplan.security.audit import Actor
from careplan.security.policy import DIRECTORY_TYPES, Caller, visible
from careplan.store import bundle, service

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
LEAD = Caller("lead", "Organization/programme")
BASE = guard.CANONICAL_BASE
PRACTICE = {"resourceType": "PlanDefinition", "id": "navigation", "status": "active", "url": f"{BASE}PlanDefinition/n"}


def acting(role: str) -> context.RequestContext:
    return context.RequestContext(caller=Caller(role, "Organization/programme"),
                                  actor=Actor(subject=f"test-{role}", issuer="test", role=role))


@pytest.fixture
def world(database):
    for resource in ({"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]},
                     {"resourceType": "CarePlan", "id": "cp1", "status": "draft", "intent": "plan",
                      "subject": {"reference": "Patient/p1"}},
                     {"resourceType": "Organization", "id": "harbour", "name": "Harbour"},
                     {"resourceType": "Measure", "id": "m1", "status": "active"},
                     {"resourceType": "MeasureReport", "id": "mr1", "status": "complete", "type": "subject-list",
                      "measure": "https://careplan.example.org/fhir/Measure/m1", "subject": {"reference": "Patient/p1"},
                      "period": {"start": "2026-09-01", "end": "2026-09-30"}},
                     PRACTICE):
        service.update(database, resource_type=resource["resourceType"], resource_id=resource["id"],
                       resource=resource)
    return database


def seen(database, caller, resource_type=None) -> set[str]:
    with database.reading() as session:
        query = select(Resource.res_type, Resource.res_id).where(
            Resource.deleted.is_(False), Resource.res_type != "AuditEvent",
            visible(caller, resource_type, now=NOW))
        if resource_type:
            query = query.where(Resource.res_type == resource_type)
        return {f"{t}/{i}" for t, i in session.execute(query)}


def test_a_lead_sees_the_directory_and_measures_and_no_patient_data(world):
    assert seen(world, LEAD, "Organization") == {"Organization/harbour"}
    assert seen(world, LEAD, "PlanDefinition") == {"PlanDefinition/navigation"}
    assert seen(world, LEAD, "Measure") == {"Measure/m1"}
    for patient_data in ("Patient", "CarePlan", "MeasureReport", "AuditEvent"):
        assert seen(world, LEAD, patient_data) == set(), patient_data
    # the any-type condition (system search, includes, history) agrees
    assert seen(world, LEAD) == {"Organization/harbour", "PlanDefinition/navigation", "Measure/m1"}
    # while a coordinator (circle of care) does see the patient's data: the fixture is not empty
    assert {"Patient/p1", "CarePlan/cp1", "MeasureReport/mr1"} <= seen(world, Caller("coordinator"))
    assert "Measure" not in DIRECTORY_TYPES  # partners still do not see Measures


def test_a_lead_writes_nothing_through_the_store(world):
    with context.acting_as(acting("lead")):
        with world.writing() as session, pytest.raises(Forbidden, match="may not write"):
            service.create_in(session, resource={"resourceType": "Organization", "name": "New"})
        with world.writing() as session, pytest.raises(FhirError) as refused:
            service.delete_in(session, resource_type="Patient", resource_id="p1")
        assert refused.value.status == 404  # a patient it may not see does not exist for it


@pytest.mark.parametrize("role", ["coordinator", "ehr", "partner", "lead"])
def test_the_catalogue_is_refused_to_every_role_but_admin_in_the_store(world, role):
    promoted = {**PRACTICE, "title": "changed"}
    with context.acting_as(acting(role)):
        with world.writing() as session, pytest.raises(Forbidden, match="curate"):
            service.update_in(session, resource=promoted, resource_id="navigation")
        with world.writing() as session, pytest.raises(Forbidden, match="curate"):
            service.delete_in(session, resource_type="PlanDefinition", resource_id="navigation")
        with pytest.raises(FhirError) as refused:  # a transaction Bundle, as the importer and /fhir run them
            bundle.transaction(world, [{"resource": promoted,
                                        "request": {"method": "PUT", "url": "PlanDefinition/navigation"}}])
        assert refused.value.status == 403
    assert service.read(world, resource_type="PlanDefinition", resource_id="navigation").content.get("title") is None


def test_admins_and_the_trusted_system_curate_the_catalogue(world):
    with context.acting_as(acting("admin")):
        with world.writing() as session:
            service.update_in(session, resource={**PRACTICE, "title": "by the admin"}, resource_id="navigation")
    # no request context: the CLI, seed and the importer run as the trusted system
    outcomes = bundle.transaction(world, [{"resource": {**PRACTICE, "title": "imported"},
                                           "request": {"method": "PUT", "url": "PlanDefinition/navigation"}}])
    assert len(outcomes) == 1
    assert service.read(world, resource_type="PlanDefinition", resource_id="navigation").content["title"] == \
        "imported"


def test_what_counts_as_catalogue():
    assert guard.is_catalogue({"resourceType": "ActivityDefinition"})
    assert guard.is_catalogue({"resourceType": "ValueSet", "url": f"{BASE}ValueSet/tiers"})
    assert not guard.is_catalogue({"resourceType": "CodeSystem", "url": "http://loinc.org"})
    assert not guard.is_catalogue({"resourceType": "CodeSystem"})
    assert not guard.is_catalogue({"resourceType": "Organization", "url": f"{BASE}x"})
