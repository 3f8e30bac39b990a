"""Required terminology bindings that fhir.resources leaves unchecked."""

import copy
import json

import pytest

from careplan.validation.bindings import DEFAULT_FHIR_DIR, BindingIssue, check_required_bindings

CAREPLAN = {
    "resourceType": "CarePlan",
    "id": "cp-1",
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Recovery plan</div>"},
    "identifier": [{"use": "official", "system": "http://hospital.example/careplans", "value": "CP-1"}],
    "status": "active",
    "intent": "plan",
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736378000"}]}],
    "subject": {"reference": "Patient/p-1"},
    "period": {"start": "2024-03-01"},
    "activity": [
        {"detail": {"kind": "Appointment", "status": "scheduled",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "385893007"}]},
                    "scheduledTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk",
                                                   "dayOfWeek": ["mon", "thu"]}}}},
        {"detail": {"kind": "ServiceRequest", "status": "not-started",
                    "scheduledPeriod": {"start": "2024-04-01"}}},
    ],
}

ACTIVITY_STATUSES = (
    "not-started, scheduled, in-progress, on-hold, completed, cancelled, stopped, unknown, entered-in-error"
)


def changed(resource: dict, change) -> dict:
    resource = copy.deepcopy(resource)
    change(resource)
    return resource


def test_valid_careplan_has_no_issue():
    assert check_required_bindings(CAREPLAN) == []


def test_bad_status():
    plan = changed(CAREPLAN, lambda r: r.update(status="bogus"))
    assert check_required_bindings(plan) == [
        BindingIssue(
            "CarePlan.status",
            "Value 'bogus' is not in the required value set http://hl7.org/fhir/ValueSet/request-status "
            "(allowed: draft, active, on-hold, revoked, completed, entered-in-error, unknown)",
        )
    ]


def test_backbone_element_is_located_with_indexes():
    plan = changed(CAREPLAN, lambda r: r["activity"][1]["detail"].update(status="done", kind="Referral"))
    assert check_required_bindings(plan) == [
        BindingIssue(
            "CarePlan.activity[1].detail.kind",
            "Value 'Referral' is not in the required value set http://hl7.org/fhir/ValueSet/care-plan-activity-kind "
            "(allowed: Appointment, CommunicationRequest, DeviceRequest, MedicationRequest, NutritionOrder, Task, "
            "ServiceRequest, VisionPrescription)",
        ),
        BindingIssue(
            "CarePlan.activity[1].detail.status",
            "Value 'done' is not in the required value set "
            f"http://hl7.org/fhir/ValueSet/care-plan-activity-status (allowed: {ACTIVITY_STATUSES})",
        ),
    ]


def test_datatype_elements_inside_choice_and_lists():
    def change(plan):
        repeat = plan["activity"][0]["detail"]["scheduledTiming"]["repeat"]
        repeat["periodUnit"] = "week"
        repeat["dayOfWeek"] = ["mon", "Thursday"]
        plan["identifier"][0]["use"] = "primary"
        plan["text"]["status"] = "auto"

    assert [i.expression for i in check_required_bindings(changed(CAREPLAN, change))] == [
        "CarePlan.text.status",
        "CarePlan.identifier[0].use",
        "CarePlan.activity[0].detail.scheduled.ofType(Timing).repeat.periodUnit",
        "CarePlan.activity[0].detail.scheduled.ofType(Timing).repeat.dayOfWeek[1]",
    ]


def test_patient_gender_and_telecom():
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Ångström", "given": ["Zoë"]}],
        "gender": "f",
        "telecom": [{"system": "phone", "value": "+1 416 555 0100"}, {"system": "sms", "value": "x"},
                    {"system": "pager2", "value": "y"}],
        "contact": [{"gender": "unknown", "name": {"use": "nick"}}],
    }
    issues = check_required_bindings(patient)
    assert [i.expression for i in issues] == [
        "Patient.telecom[2].system",
        "Patient.gender",
        "Patient.contact[0].name.use",
    ]
    assert issues[1].message == (
        "Value 'f' is not in the required value set http://hl7.org/fhir/ValueSet/administrative-gender "
        "(allowed: male, female, other, unknown)"
    )


def test_codeable_concept_only_judges_the_value_sets_system():
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p-1"},
        "clinicalStatus": {"coding": [
            {"system": "http://snomed.info/sct", "code": "55561003"},  # a translation: not judged
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "gone"},
        ]},
        "verificationStatus": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"},
        ]},
    }
    assert check_required_bindings(condition) == [
        BindingIssue(
            "Condition.clinicalStatus.coding[1].code",
            "Code 'gone' of system http://terminology.hl7.org/CodeSystem/condition-clinical is not in the "
            "required value set http://hl7.org/fhir/ValueSet/condition-clinical "
            "(allowed: active, recurrence, relapse, inactive, remission, resolved)",
        )
    ]


def test_nested_questionnaire_items_and_long_value_sets():
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "subjectType": ["Patient", "Person2"],
        "item": [{"linkId": "1", "type": "group", "item": [
            {"linkId": "1.1", "type": "boolean"},
            {"linkId": "1.2", "type": "yes-no",
             "enableWhen": [{"question": "1.1", "operator": "~", "answerBoolean": True}]},
        ]}],
    }
    issues = check_required_bindings(questionnaire)
    assert [i.expression for i in issues] == [
        "Questionnaire.subjectType[1]",
        "Questionnaire.item[0].item[1].type",
        "Questionnaire.item[0].item[1].enableWhen[0].operator",
    ]
    # resource-types has 148 codes: the message quotes the first 20
    assert issues[0].message.endswith("ChargeItemDefinition, Claim, ClaimResponse, ... (128 more))")


def test_contained_resources_are_checked_against_their_own_type():
    plan = changed(CAREPLAN, lambda r: r.update(contained=[{"resourceType": "Goal", "id": "g",
                                                            "lifecycleStatus": "finished",
                                                            "description": {"text": "x"},
                                                            "subject": {"reference": "Patient/p-1"}}]))
    (issue,) = check_required_bindings(plan)
    assert issue.expression == "CarePlan.contained[0].lifecycleStatus"
    assert issue.message.startswith("Value 'finished' is not in the required value set "
                                    "http://hl7.org/fhir/ValueSet/goal-status (allowed: proposed, planned,")


@pytest.fixture
def choice_bindings(tmp_path):
    # no supported type binds a choice element to a code, so this one is made up
    (tmp_path / "definitions").mkdir()
    (tmp_path / "definitions" / "required-bindings.json").write_text(json.dumps({
        "Observation": [{"path": "Observation.value[x]", "types": ["code", "Coding"],
                         "valueSet": "http://example.org/ValueSet/v|1", "codes": ["a", "b"],
                         "systems": ["http://example.org/cs"]}],
        "recursive": {}, "skipped": [],
    }))
    return tmp_path


def test_choice_type_bound_to_a_code(choice_bindings):
    def check(value: dict) -> list[BindingIssue]:
        return check_required_bindings({"resourceType": "Observation", **value}, choice_bindings)

    assert check({"valueCode": "a"}) == []
    assert check({"valueCode": "c"}) == [BindingIssue(
        "Observation.value.ofType(code)",
        "Value 'c' is not in the required value set http://example.org/ValueSet/v (allowed: a, b)",
    )]
    assert [i.expression for i in check({"valueCoding": {"system": "http://example.org/cs", "code": "z"}})] == [
        "Observation.value.ofType(Coding).code"
    ]
    assert check({"valueCoding": {"system": "http://other.example/cs", "code": "z"}}) == []


def test_generated_file_shape():
    data = json.loads((DEFAULT_FHIR_DIR / "definitions" / "required-bindings.json").read_text(encoding="utf-8"))
    status = next(e for e in data["CarePlan"] if e["path"] == "CarePlan.activity.detail.status")
    assert status == {
        "path": "CarePlan.activity.detail.status",
        "types": ["code"],
        "valueSet": "http://hl7.org/fhir/ValueSet/care-plan-activity-status|4.0.1",
        "codes": ACTIVITY_STATUSES.split(", "),
        "systems": ["http://hl7.org/fhir/care-plan-activity-status"],
    }
    assert {s["valueSet"].split("|")[0] for s in data["skipped"]} >= {"http://hl7.org/fhir/ValueSet/mimetypes"}
    assert all(entry["codes"] for key, entries in data.items() if key not in ("recursive", "skipped")
               for entry in entries)
