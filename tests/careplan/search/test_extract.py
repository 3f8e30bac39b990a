"""Search parameter registry and index value extraction, on realistic resources."""

import re
from datetime import datetime, timezone
from decimal import Decimal

import fhirpathpy
import pytest
import simplejson
from fhirpathpy.models import models

from careplan.resources import SUPPORTED_TYPES
from careplan.search import extract as extraction
from careplan.search.extract import MIN_UTC, extract, normalize
from careplan.search.parameters import load_registry
from careplan.search.values import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
)

MAX_UTC = datetime.max.replace(tzinfo=timezone.utc)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def day(year: int, month: int, d: int) -> tuple[datetime, datetime]:
    return utc(year, month, d), utc(year, month, d, 23, 59, 59, 999999)


def load(text: str) -> dict:
    # the same parsing the API applies to request bodies
    return simplejson.loads(text, use_decimal=True)


CAREPLAN = """{
 "resourceType": "CarePlan", "id": "cp-1",
 "meta": {"versionId": "1", "lastUpdated": "2024-03-01T08:00:00Z",
          "tag": [{"system": "http://careplan.example/tags", "code": "mh"}],
          "profile": ["http://careplan.example/StructureDefinition/mh-careplan"]},
 "identifier": [{"system": "http://hospital.example/careplans", "value": "CP-2024-001"}],
 "status": "active", "intent": "plan",
 "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736378000",
                           "display": "Mental health care plan"}],
               "text": "Mental health"}],
 "title": "Recovery plan",
 "subject": {"reference": "Patient/p-1", "display": "Zoë Ångström"},
 "encounter": {"reference": "Encounter/e-1"},
 "period": {"start": "2024-03-01", "end": "2024-08-31"},
 "created": "2024-02-28T14:30:00+01:00",
 "author": {"reference": "Practitioner/pr-1"},
 "careTeam": [{"reference": "CareTeam/ct-1"}],
 "addresses": [{"reference": "Condition/c-1"}],
 "goal": [{"reference": "Goal/g-1"}, {"reference": "Goal/g-2"}, {"reference": "Goal/g-1"}],
 "instantiatesCanonical": ["http://careplan.example/PlanDefinition/mh-recovery|1.0"],
 "activity": [
  {"detail": {"kind": "Appointment",
              "code": {"coding": [{"system": "http://snomed.info/sct", "code": "385893007",
                                   "display": "Counselling"}]},
              "status": "scheduled",
              "scheduledTiming": {"event": ["2024-03-05T09:00:00+01:00"],
                                  "repeat": {"boundsPeriod": {"start": "2024-03-01", "end": "2024-06-30"},
                                             "frequency": 1, "period": 1, "periodUnit": "wk"}},
              "performer": [{"reference": "Practitioner/pr-2"}]}},
  {"detail": {"kind": "ServiceRequest",
              "code": {"coding": [{"system": "http://snomed.info/sct", "code": "386053000",
                                   "display": "Evaluation procedure"}]},
              "status": "not-started",
              "scheduledPeriod": {"start": "2024-04-01"}}}
 ]
}"""

PATIENT = """{
 "resourceType": "Patient", "id": "p-1", "active": true,
 "identifier": [{"use": "official", "type": {"text": "Health card"},
                 "system": "https://fhir.infoway-inforoute.ca/NamingSystem/ca-on-patient-hcn", "value": "1234567890"},
                {"system": "http://hospital.example/mrn", "value": "MRN-42"}],
 "name": [{"use": "official", "family": "Ångström", "given": ["Zoë", "Marie"]},
          {"use": "nickname", "given": ["Zo"]}],
 "telecom": [{"system": "phone", "value": "+1 416 555 0100", "use": "mobile"},
             {"system": "email", "value": "zoe@example.org"}],
 "gender": "female", "birthDate": "1987-06-15",
 "address": [{"use": "home", "line": ["12 Rue Sainte-Catherine", "Apt 3"], "city": "Montréal",
              "state": "QC", "postalCode": "H2X 1Y1", "country": "CA"}],
 "generalPractitioner": [{"reference": "Practitioner/pr-1"}],
 "managingOrganization": {"reference": "https://other.example/fhir/Organization/org-9"},
 "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-CA"}]}, "preferred": true}]
}"""

TASK = """{
 "resourceType": "Task", "id": "t-1", "status": "requested", "intent": "order", "priority": "urgent",
 "identifier": [{"system": "http://hospital.example/tasks", "value": "T-77"}],
 "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
 "businessStatus": {"text": "Waiting for callback"},
 "focus": {"reference": "CarePlan/cp-1"},
 "for": {"reference": "Patient/p-1"},
 "basedOn": [{"reference": "urn:uuid:8f1c1c3e-6d1e-4c55-9a55-1c2b0c1b2f00", "type": "ServiceRequest"}],
 "partOf": [{"reference": "#inner"}],
 "encounter": {"identifier": {"system": "http://hospital.example/visits", "value": "V-1"}},
 "authoredOn": "2024-03-02T10:15:00Z",
 "lastModified": "2024-03-02T10:15:30.250Z",
 "requester": {"reference": "Practitioner/pr-1/_history/3"},
 "owner": {"reference": "https://partner.example/fhir/Organization/org-2"},
 "executionPeriod": {"start": "2024-03-02T10:15:00Z"}
}"""

OBSERVATION = """{
 "resourceType": "Observation", "id": "o-1", "status": "final",
 "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                           "code": "laboratory"}]}],
 "code": {"coding": [{"system": "http://loinc.org", "code": "2947-0", "display": "Sodium [Moles/volume] in Blood"}]},
 "subject": {"reference": "Group/g-1"},
 "effectiveDateTime": "2024-03-02",
 "valueQuantity": {"value": 1.50, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
 "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                  "code": "mm[Hg]"}}]
}"""

CONDITION = """{
 "resourceType": "Condition", "id": "c-1",
 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active"}]},
 "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                    "code": "confirmed"}]},
 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007", "display": "Depressive disorder"}],
          "text": "Depression"},
 "subject": {"reference": "Patient/p-1"},
 "onsetDateTime": "2023-11-20T08:30:00+02:00",
 "recordedDate": "2023-12"
}"""

SAMPLES = [CAREPLAN, PATIENT, TASK, OBSERVATION, CONDITION]


# --- registry ------------------------------------------------------------------------------------


def test_registry_restricts_union_expressions_to_the_type():
    registry = load_registry()
    patient = registry.get("CarePlan", "patient")
    assert patient.expression == "CarePlan.subject.where(resolve() is Patient)"
    assert patient.type == "reference"
    assert patient.base == "CarePlan"
    assert patient.targets == ("Patient",)
    assert patient.url == "http://hl7.org/fhir/SearchParameter/clinical-patient"
    assert registry.get("CarePlan", "date").expression == "CarePlan.period"
    # Group is not a supported type
    assert registry.get("CarePlan", "subject").targets == ("Patient",)


def test_registry_includes_resource_level_parameters():
    parameters = load_registry().for_type("Task")
    for code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text"):
        assert code in parameters
    assert parameters["_tag"].expression == "Resource.meta.tag"
    assert parameters["_tag"].base == "Task"
    assert parameters["_source"].type == "uri"
    assert parameters["owner"].expression == "Task.owner"
    assert "text" in parameters["code"].modifiers


def test_registry_unknown_names():
    registry = load_registry()
    assert registry.get("CarePlan", "no-such-param") is None
    assert registry.get("Medication", "code") is None
    assert registry.for_type("Medication") == {}


def test_registry_covers_every_supported_type():
    registry = load_registry()
    for resource_type in SUPPORTED_TYPES:
        parameters = registry.for_type(resource_type)
        assert "_id" in parameters
        assert len(parameters) > 10, resource_type
        for parameter in parameters.values():
            assert parameter.base == resource_type
            if parameter.expression and not parameter.code.startswith("_"):
                assert resource_type in parameter.expression


# --- extraction ----------------------------------------------------------------------------------


def test_careplan():
    values = extract(load(CAREPLAN))
    assert len(values) == len(set(values))
    assert set(values) == {
        UriIndex("_profile", "http://careplan.example/StructureDefinition/mh-careplan"),
        TokenIndex("_tag", "http://careplan.example/tags", "mh", None),
        TokenIndex("identifier", "http://hospital.example/careplans", "CP-2024-001", None),
        TokenIndex("status", None, "active", None),
        TokenIndex("intent", None, "plan", None),
        TokenIndex("category", "http://snomed.info/sct", "736378000", "Mental health care plan"),
        TokenIndex("category", None, None, "Mental health"),
        TokenIndex("activity-code", "http://snomed.info/sct", "385893007", "Counselling"),
        TokenIndex("activity-code", "http://snomed.info/sct", "386053000", "Evaluation procedure"),
        DateIndex("date", utc(2024, 3, 1), utc(2024, 8, 31, 23, 59, 59, 999999)),
        # the Timing's event (09:00+01:00 to the second) and its repeat.boundsPeriod
        DateIndex("activity-date", utc(2024, 3, 5, 8, 0), utc(2024, 3, 5, 8, 0, 0, 999999)),
        DateIndex("activity-date", utc(2024, 3, 1), utc(2024, 6, 30, 23, 59, 59, 999999)),
        # scheduledPeriod with no end
        DateIndex("activity-date", utc(2024, 4, 1), MAX_UTC),
        ReferenceIndex("subject", "Patient", "p-1", None),
        ReferenceIndex("patient", "Patient", "p-1", None),
        ReferenceIndex("encounter", "Encounter", "e-1", None),
        ReferenceIndex("care-team", "CareTeam", "ct-1", None),
        ReferenceIndex("condition", "Condition", "c-1", None),
        ReferenceIndex("goal", "Goal", "g-1", None),
        ReferenceIndex("goal", "Goal", "g-2", None),
        ReferenceIndex("performer", "Practitioner", "pr-2", None),
        ReferenceIndex("instantiates-canonical", None, None, "http://careplan.example/PlanDefinition/mh-recovery|1.0"),
    }


def test_patient():
    values = extract(load(PATIENT))
    assert len(values) == len(set(values))

    def strings(param: str) -> set[tuple[str, str]]:
        return {(v.value, v.normalized) for v in values if isinstance(v, StringIndex) and v.param == param}

    name_parts = {("Ångström", "angstrom"), ("Zoë", "zoe"), ("Marie", "marie"), ("Zo", "zo")}
    assert strings("name") == name_parts
    assert strings("phonetic") == name_parts
    assert strings("family") == {("Ångström", "angstrom")}
    assert strings("given") == {("Zoë", "zoe"), ("Marie", "marie"), ("Zo", "zo")}
    assert strings("address") == {
        ("12 Rue Sainte-Catherine", "12 rue sainte-catherine"), ("Apt 3", "apt 3"),
        ("Montréal", "montreal"), ("QC", "qc"), ("H2X 1Y1", "h2x 1y1"), ("CA", "ca"),
    }
    assert strings("address-city") == {("Montréal", "montreal")}
    assert strings("address-postalcode") == {("H2X 1Y1", "h2x 1y1")}
    assert {v for v in values if not isinstance(v, StringIndex)} == {
        TokenIndex("active", None, "true", None),
        TokenIndex("deceased", None, "false", None),
        TokenIndex("gender", None, "female", None),
        TokenIndex("address-use", None, "home", None),
        TokenIndex("identifier", "https://fhir.infoway-inforoute.ca/NamingSystem/ca-on-patient-hcn", "1234567890",
                   "Health card"),
        TokenIndex("identifier", "http://hospital.example/mrn", "MRN-42", None),
        TokenIndex("telecom", "phone", "+1 416 555 0100", None),
        TokenIndex("telecom", "email", "zoe@example.org", None),
        TokenIndex("phone", "phone", "+1 416 555 0100", None),
        TokenIndex("email", "email", "zoe@example.org", None),
        TokenIndex("language", "urn:ietf:bcp:47", "fr-CA", None),
        DateIndex("birthdate", *day(1987, 6, 15)),
        ReferenceIndex("general-practitioner", "Practitioner", "pr-1", None),
        ReferenceIndex("organization", "Organization", "org-9", "https://other.example/fhir/Organization/org-9"),
    }


def test_task():
    values = extract(load(TASK))
    assert len(values) == len(set(values))
    assert set(values) == {
        TokenIndex("status", None, "requested", None),
        TokenIndex("intent", None, "order", None),
        TokenIndex("priority", None, "urgent", None),
        TokenIndex("identifier", "http://hospital.example/tasks", "T-77", None),
        TokenIndex("code", "http://hl7.org/fhir/CodeSystem/task-code", "fulfill", None),
        TokenIndex("business-status", None, None, "Waiting for callback"),
        ReferenceIndex("focus", "CarePlan", "cp-1", None),
        ReferenceIndex("subject", "Patient", "p-1", None),
        ReferenceIndex("patient", "Patient", "p-1", None),
        # urn:uuid: keeps the url; Reference.type still names the target
        ReferenceIndex("based-on", "ServiceRequest", None, "urn:uuid:8f1c1c3e-6d1e-4c55-9a55-1c2b0c1b2f00"),
        # a versioned reference points at the resource
        ReferenceIndex("requester", "Practitioner", "pr-1", None),
        ReferenceIndex("owner", "Organization", "org-2", "https://partner.example/fhir/Organization/org-2"),
        DateIndex("authored-on", utc(2024, 3, 2, 10, 15), utc(2024, 3, 2, 10, 15, 0, 999999)),
        # milliseconds given: the range is that millisecond
        DateIndex("modified", utc(2024, 3, 2, 10, 15, 30, 250000), utc(2024, 3, 2, 10, 15, 30, 250999)),
        DateIndex("period", utc(2024, 3, 2, 10, 15), MAX_UTC),
    }
    # contained (#inner) and identifier-only references are not indexed
    assert not any(isinstance(v, ReferenceIndex) and v.param in ("part-of", "encounter") for v in values)


def test_observation_keeps_the_exact_decimal():
    values = extract(load(OBSERVATION))
    assert len(values) == len(set(values))
    quantities = [v for v in values if v.param == "value-quantity"]
    assert quantities == [
        QuantityIndex("value-quantity", Decimal("1.50"), "http://unitsofmeasure.org", "mmol/L", "mmol/L")
    ]
    assert type(quantities[0].value) is Decimal and str(quantities[0].value) == "1.50"
    assert set(values) == {
        TokenIndex("status", None, "final", None),
        TokenIndex("category", "http://terminology.hl7.org/CodeSystem/observation-category", "laboratory", None),
        TokenIndex("code", "http://loinc.org", "2947-0", "Sodium [Moles/volume] in Blood"),
        TokenIndex("combo-code", "http://loinc.org", "2947-0", "Sodium [Moles/volume] in Blood"),
        TokenIndex("combo-code", "http://loinc.org", "8480-6", None),
        TokenIndex("component-code", "http://loinc.org", "8480-6", None),
        quantities[0],
        QuantityIndex("combo-value-quantity", Decimal("1.50"), "http://unitsofmeasure.org", "mmol/L", "mmol/L"),
        QuantityIndex("combo-value-quantity", Decimal("120"), "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),
        QuantityIndex("component-value-quantity", Decimal("120"), "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),
        DateIndex("date", *day(2024, 3, 2)),
        # subject is a Group: indexed for subject, not for patient
        ReferenceIndex("subject", "Group", "g-1", None),
    }


def test_condition_onset_is_converted_to_utc():
    values = extract(load(CONDITION))
    assert len(values) == len(set(values))
    assert set(values) == {
        TokenIndex("clinical-status", "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", None),
        TokenIndex("verification-status", "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                   "confirmed", None),
        TokenIndex("code", "http://snomed.info/sct", "35489007", "Depressive disorder"),
        TokenIndex("code", None, None, "Depression"),
        ReferenceIndex("subject", "Patient", "p-1", None),
        ReferenceIndex("patient", "Patient", "p-1", None),
        # 08:30+02:00 is 06:30Z
        DateIndex("onset-date", utc(2023, 11, 20, 6, 30), utc(2023, 11, 20, 6, 30, 0, 999999)),
        DateIndex("recorded-date", utc(2023, 12, 1), utc(2023, 12, 31, 23, 59, 59, 999999)),
    }


def test_date_precision_and_open_periods():
    goal = load("""{"resourceType": "Goal", "lifecycleStatus": "active",
                    "description": {"text": "Sleep better"}, "subject": {"reference": "Patient/p-1"},
                    "startDate": "2024", "target": [{"dueDate": "2024-02"}]}""")
    care_team = load("""{"resourceType": "CareTeam", "period": {"end": "2025-01-31T17:00:00-05:00"}}""")
    assert [v for v in extract(goal) if isinstance(v, DateIndex)] == [
        DateIndex("start-date", utc(2024, 1, 1), utc(2024, 12, 31, 23, 59, 59, 999999)),
        DateIndex("target-date", utc(2024, 2, 1), utc(2024, 2, 29, 23, 59, 59, 999999)),
    ]
    assert [v for v in extract(care_team) if isinstance(v, DateIndex)] == [
        DateIndex("date", MIN_UTC, utc(2025, 1, 31, 22, 0, 0, 999999)),
    ]


def test_malformed_dates_are_not_indexed():
    task = load("""{"resourceType": "Task", "status": "draft", "intent": "order",
                    "authoredOn": "yesterday", "executionPeriod": {"start": "2024-13-01", "end": "2024-02-01"}}""")
    assert not [v for v in extract(task) if isinstance(v, DateIndex)]


def test_long_strings_are_truncated():
    title = "Ä" + "x" * 400
    plan = load(simplejson.dumps({"resourceType": "PlanDefinition", "status": "draft", "title": title}))
    (value,) = [v for v in extract(plan) if v.param == "title"]
    assert value == StringIndex("title", title[:255], ("a" + "x" * 400)[:255])


def test_normalize():
    assert normalize("Zoë Ångström") == "zoe angstrom"
    assert normalize("STRASSE Straße") == "strasse strasse"
    assert normalize("Ｆｕｌｌ") == "full"


def test_resolve_filter_keeps_only_the_named_target_type():
    def patient_refs(reference: str) -> list:
        plan = load(simplejson.dumps({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                                      "subject": {"reference": reference}}))
        return [v for v in extract(plan) if v.param == "patient"]

    assert patient_refs("Patient/p-1") == [ReferenceIndex("patient", "Patient", "p-1", None)]
    assert patient_refs("https://x.example/fhir/Patient/p-2") == [
        ReferenceIndex("patient", "Patient", "p-2", "https://x.example/fhir/Patient/p-2")
    ]
    assert patient_refs("Group/g-1") == []


def test_numbers_and_floats():
    # a resource parsed without use_decimal still gives exact decimals of the written value
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "valueQuantity": {"value": 0.1, "unit": "mg"}}
    (value,) = [v for v in extract(observation) if v.param == "value-quantity"]
    assert value == QuantityIndex("value-quantity", Decimal("0.1"), None, None, "mg")
    assert str(value.value) == "0.1"
    assert not any(isinstance(v, NumberIndex) for v in extract(observation))


def test_every_supported_type_extracts_from_a_bare_resource():
    for resource_type in SUPPORTED_TYPES:
        values = extract({"resourceType": resource_type})
        # only Patient.deceased is computed (false) on an empty resource
        assert values == ([TokenIndex("deceased", None, "false", None)] if resource_type == "Patient" else [])


def test_id_last_updated_composite_and_special_are_not_extracted():
    codes = {v.param for sample in SAMPLES for v in extract(load(sample))}
    assert not codes & {"_id", "_lastUpdated", "combo-code-value-quantity", "code-value-quantity"}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: load(s)["resourceType"])
def test_direct_walk_matches_fhirpathpy(sample):
    resource = load(sample)
    resource_type = resource["resourceType"]
    model = models["r4"]
    checked = 0
    for plan in extraction._plans(load_registry(), resource_type):
        for part in plan.parts:
            expression = re.sub(r"^(\(*)(?:Domain)?Resource\.", rf"\g<1>{resource_type}.", part.expression)
            expression = extraction._RESOLVE_IS.sub(r"\g<path>", expression)
            reference = fhirpathpy.compile(expression, model=model, options={"returnRawData": True})
            expected = [extraction._unwrap(node) for node in reference(resource)]
            assert part.evaluate(resource) == expected, part.expression
            checked += 1
    assert checked > 10
