"""Security labels are added on write from the labelling rules and never lowered by the server."""

from careplan.security import labels
from careplan.security.labels import CONFIDENTIALITY_SYSTEM, SENSITIVITY_SYSTEM, Labels


def condition(system, code, **extra):
    return {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": system, "code": code}]}, **extra}


def security(resource):
    return {(c["system"], c["code"]) for c in resource["meta"]["security"]}


def test_substance_use_diagnosis_is_restricted_with_sensitivity():
    labelled = labels.apply(condition("http://hl7.org/fhir/sid/icd-10-cm", "F11.20"))
    assert security(labelled) == {(CONFIDENTIALITY_SYSTEM, "R"), (SENSITIVITY_SYSTEM, "ETH"), (SENSITIVITY_SYSTEM, "SUD")}
    assert labels.labels_of(labelled).substance_use


def test_mental_health_diagnosis_gets_psy():
    found = labels.labels_of(labels.apply(condition("http://snomed.info/sct", "370143000")))
    assert found == Labels("R", frozenset({"PSY", "BH"}))


def test_icd10_ranges_are_bounded():
    assert not labels.derive(condition("http://hl7.org/fhir/sid/icd-10", "E11.9")).sensitive
    assert labels.derive(condition("http://hl7.org/fhir/sid/icd-10", "F19.99")).substance_use
    assert labels.derive(condition("http://hl7.org/fhir/sid/icd-10", "F20")).sensitivity == {"PSY", "BH"}


def test_ordinary_resource_is_returned_unchanged():
    plain = condition("http://snomed.info/sct", "32911000")
    assert labels.apply(plain) is plain


def test_client_labels_are_kept_and_confidentiality_only_raised():
    sent = condition("http://hl7.org/fhir/sid/icd-10", "F32.1", meta={"security": [
        {"system": CONFIDENTIALITY_SYSTEM, "code": "V"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "NORDSCLCD"}]})
    labelled = labels.apply(sent)
    assert labels.labels_of(labelled).confidentiality == "V"
    assert ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "NORDSCLCD") in security(labelled)
    lower = condition("http://hl7.org/fhir/sid/icd-10", "F32.1", meta={"security": [
        {"system": CONFIDENTIALITY_SYSTEM, "code": "L"}]})
    assert labels.labels_of(labels.apply(lower)).confidentiality == "R"


def test_recoding_does_not_declassify():
    before = labels.apply(condition("http://hl7.org/fhir/sid/icd-10", "F10.1"))
    after = labels.apply(condition("http://snomed.info/sct", "32911000"), previous=before)
    assert labels.labels_of(after) == Labels("R", frozenset({"ETH", "SUD"}))


def test_codes_in_meta_are_not_read_as_clinical_codes():
    tagged = {"resourceType": "Patient", "meta": {"tag": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F10"}]}}
    assert labels.apply(tagged) is tagged
