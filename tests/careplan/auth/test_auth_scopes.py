"""SMART scopes: parsing (v2 and v1), granting, and what each interaction needs."""

import pytest

from careplan.auth.scopes import (
    ALL_TYPES,
    FAIL_CLOSED,
    FHIR_RULES,
    Need,
    Scope,
    ScopeError,
    ScopeSet,
    bundle_needs,
    grant,
    grants_everything,
    missing,
    needs_for,
    parse_scope,
)


@pytest.mark.parametrize("text, expected", [
    ("system/CarePlan.rs", Scope("system", "CarePlan", "rs")),
    ("user/*.cruds", Scope("user", "*", "cruds")),
    ("system/Patient.sr", Scope("system", "Patient", "rs")),  # letters in any order come back canonical
    ("system/Patient.read", Scope("system", "Patient", "rs")),  # v1
    ("system/Patient.write", Scope("system", "Patient", "cud")),
    ("user/*.*", Scope("user", "*", "cruds")),
    ("patient/Observation.rs", Scope("patient", "Observation", "rs")),
])
def test_scopes_parse_v2_and_map_v1(text, expected):
    assert parse_scope(text) == expected


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch/patient", "offline_access",
                                  "patient/Observation.rs?category=laboratory"])
def test_non_resource_and_granular_scopes_grant_nothing(text):
    assert parse_scope(text) is None


@pytest.mark.parametrize("text", ["system/CarePlan.x", "system/CarePlan.rr", "system/carePlan.rs", "system/.rs",
                                  "system/CarePlan"])
def test_malformed_resource_scopes_are_refused(text):
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_scope_sets_merge_and_drop_what_a_wildcard_covers():
    scopes = ScopeSet.parse("system/CarePlan.r system/CarePlan.s system/*.rs system/Patient.cru user/Task.read")
    assert str(scopes) == "user/Task.rs system/*.rs system/Patient.cru"


def test_grant_is_requested_within_registered():
    registered = ScopeSet.parse("system/*.rs system/Task.cruds")
    assert str(grant("system/CarePlan.read system/Task.u", registered)) == "system/CarePlan.rs system/Task.u"
    assert str(grant("system/*.cruds", registered)) == "system/*.rs system/Task.cruds"
    assert str(grant(None, registered)) == str(registered)
    assert str(grant("  ", registered)) == str(registered)
    # Other contexts and unregistered scopes are dropped, not granted.
    assert not grant("user/*.cruds openid", registered)
    assert not grant("system/Patient.c", registered)


def test_grant_refuses_malformed_requests():
    with pytest.raises(ScopeError):
        grant("system/CarePlan.rs system/Task.zz", ScopeSet.parse("system/*.cruds"))


def test_patient_scopes_grant_nothing_without_a_patient_context():
    scopes = ScopeSet.parse("patient/*.cruds")
    assert not scopes.grants("Observation", "r")
    assert missing(scopes, [Need("Observation", "r")]) == [Need("Observation", "r")]


def test_missing_names_the_letters_lacking():
    scopes = ScopeSet.parse("system/CarePlan.rs user/Task.c")
    assert missing(scopes, [Need("CarePlan", "rs"), Need("Task", "cu"), Need(ALL_TYPES, "s")]) == [
        Need("Task", "u"), Need(ALL_TYPES, "s")]
    assert grants_everything(ScopeSet.parse("user/*.cruds"))
    assert not grants_everything(ScopeSet.parse("system/*.rs"))


@pytest.mark.parametrize("code, view_args, type_parameter, expected", [
    ("read", {"resource_type": "CarePlan", "resource_id": "x"}, None, [Need("CarePlan", "r")]),
    ("vread", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "r")]),
    ("history-instance", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "r")]),
    ("search-type", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "s")]),
    ("history-type", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "s")]),
    ("create", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "c")]),
    ("update", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "u")]),
    ("patch", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "u")]),
    ("delete", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "d")]),
    ("conditional-update", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "cu")]),
    ("conditional-delete", {"resource_type": "CarePlan"}, None, [Need("CarePlan", "d")]),
    ("history-system", {}, None, [Need("*", "s")]),
    ("search-system", {}, "Patient,CarePlan", [Need("Patient", "s"), Need("CarePlan", "s")]),
    ("search-system", {}, None, [Need("*", "s")]),
    ("search-system", {}, "Patient,not-a-type", [Need("*", "s")]),
    ("search-compartment", {"resource_type": "Patient", "compartment_type": "Observation"}, None,
     [Need("Observation", "s")]),
    ("search-compartment", {"resource_type": "Patient", "compartment_type": "*"}, None, [Need("*", "s")]),
    ("everything", {"resource_type": "Patient"}, "Observation", [Need("Patient", "r"), Need("Observation", "s")]),
    ("everything", {"resource_type": "Patient"}, None, [Need("Patient", "r"), Need("*", "s")]),
    ("capabilities", {}, None, []),
])
def test_each_interaction_needs_its_letters(code, view_args, type_parameter, expected):
    assert needs_for(FHIR_RULES[code], view_args=view_args, type_parameter=type_parameter) == expected


def test_a_resource_type_that_is_not_a_name_needs_a_wildcard():
    assert needs_for(FHIR_RULES["read"], view_args={"resource_type": "$meta"}) == [Need("*", "r")]


def test_unmapped_endpoints_need_everything():
    assert needs_for(FAIL_CLOSED) == [Need("*", "cruds")]


def _entry(method, url, resource=None):
    entry = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
    return entry


def test_bundle_entries_need_their_type_and_interaction():
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry("POST", "Patient", {"resourceType": "Patient"}),
        _entry("PUT", "CarePlan/p1", {"resourceType": "CarePlan"}),
        _entry("PUT", "Patient?identifier=x|1", {"resourceType": "Patient"}),
        _entry("PATCH", "Task/t1"),
        _entry("DELETE", "Goal?patient=Patient/p1"),
        _entry("GET", "Observation?code=x"),
        _entry("GET", "Observation/o1/_history/2"),
        _entry("GET", "https://example.org/fhir/Condition/c1"),
    ]}
    needs = {n.resource_type: n.permissions for n in bundle_needs(bundle, base_url="https://example.org/fhir")}
    assert needs == {"Patient": "cu", "CarePlan": "u", "Task": "u", "Goal": "d", "Observation": "rs",
                     "Condition": "r"}


def test_bundle_entry_body_type_counts_too():
    bundle = {"entry": [_entry("POST", "Patient", {"resourceType": "Observation"})]}
    assert {n.resource_type for n in bundle_needs(bundle)} == {"Patient", "Observation"}


@pytest.mark.parametrize("bundle", [
    None, [], {"entry": "x"}, {"entry": [{"resource": {"resourceType": "Patient"}}]},
    {"entry": [_entry("GET", "https://elsewhere.example/fhir/Patient/1")]},
    {"entry": [_entry("POST", "Patient/$validate")]},
    {"entry": [_entry("GET", "")]},
    {"entry": [_entry("HEAD", "Patient/1")]},
    {"entry": [_entry("POST", "Patient", {"resourceType": 7})]},
])
def test_bundles_not_understood_need_everything(bundle):
    assert bundle_needs(bundle) == [Need("*", "cruds")]
