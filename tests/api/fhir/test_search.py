"""search: https://hl7.org/fhir/R4/search.html and https://hl7.org/fhir/R4/http.html#search"""

from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from tests.api.fhir.conftest import body, outcome

FORM = "application/x-www-form-urlencoded"

NETWORK = [
    {"resourceType": "Organization", "id": "clinic", "name": "Clinique Saint-Laurent", "active": True,
     "identifier": [{"system": "urn:org", "value": "CSL"}]},
    {"resourceType": "Organization", "id": "shelter", "name": "Harbour Shelter", "alias": ["Le Havre"]},
    {"resourceType": "Practitioner", "id": "dr-roy", "name": [{"family": "Roy", "given": ["Élise"]}]},
    {"resourceType": "Patient", "id": "zoe", "identifier": [{"system": "urn:mrn", "value": "1001"}],
     "name": [{"family": "Ångström", "given": ["Zoë"]}], "gender": "female", "birthDate": "1988-04-12",
     "managingOrganization": {"reference": "Organization/clinic"},
     "meta": {"tag": [{"system": "urn:tags", "code": "mh"}], "profile": ["http://example.org/p/patient"],
              "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}},
    {"resourceType": "Patient", "id": "zola", "identifier": [{"system": "urn:mrn", "value": "1002"}],
     "name": [{"family": "Zola", "given": ["Émile"]}], "gender": "male", "birthDate": "1990-11-30"},
    {"resourceType": "Patient", "id": "marc", "identifier": [{"system": "urn:other", "value": "1001"}],
     "name": [{"family": "Tremblay", "given": ["Marc"]}], "gender": "male", "birthDate": "1975-01-01",
     "link": [{"other": {"reference": "Patient/zoe"}, "type": "seealso"}]},
    {"resourceType": "Goal", "id": "sleep", "lifecycleStatus": "active", "description": {"text": "Sleep"},
     "subject": {"reference": "Patient/zoe"}, "target": [{"dueDate": "2024-06-01"}]},
    {"resourceType": "Goal", "id": "housing", "lifecycleStatus": "proposed", "description": {"text": "Housing"},
     "subject": {"reference": "Patient/zola"}},
    {"resourceType": "Condition", "id": "dep", "subject": {"reference": "Patient/zoe"},
     "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007", "display": "Depressive disorder"}],
              "text": "Depression"}, "onsetDateTime": "2020-03-01"},
    {"resourceType": "CareTeam", "id": "team", "status": "active", "subject": {"reference": "Patient/zoe"},
     "participant": [{"member": {"reference": "Practitioner/dr-roy"}}]},
    {"resourceType": "CarePlan", "id": "plan-zoe", "status": "active", "intent": "plan",
     "subject": {"reference": "Patient/zoe"}, "goal": [{"reference": "Goal/sleep"}],
     "careTeam": [{"reference": "CareTeam/team"}], "addresses": [{"reference": "Condition/dep"}],
     "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736378000"}], "text": "Mental health"}],
     "period": {"start": "2024-01-15", "end": "2024-07-15"},
     "instantiatesCanonical": ["http://example.org/PlanDefinition/recovery|1.0"],
     "activity": [{"detail": {"status": "scheduled", "code": {"coding": [{"system": "urn:act", "code": "peer"}]},
                              "scheduledPeriod": {"start": "2024-02-01", "end": "2024-02-28"}}}]},
    {"resourceType": "CarePlan", "id": "plan-zola", "status": "draft", "intent": "plan",
     "subject": {"reference": "Patient/zola"}, "goal": [{"reference": "Goal/housing"}],
     "period": {"start": "2023-05-01"}, "basedOn": [{"reference": "CarePlan/plan-zoe"}]},
    {"resourceType": "CarePlan", "id": "plan-old", "status": "completed", "intent": "plan",
     "subject": {"reference": "Patient/zoe"}, "period": {"start": "2019-01-01", "end": "2019-12-31"}},
    {"resourceType": "ServiceRequest", "id": "referral", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/zoe"}, "requester": {"reference": "Practitioner/dr-roy"},
     "performer": [{"reference": "Organization/shelter"}], "basedOn": [{"reference": "CarePlan/plan-zoe"}],
     "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306206005"}]}},
    {"resourceType": "Consent", "id": "consent", "status": "active", "patient": {"reference": "Patient/zoe"},
     "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                           "code": "patient-privacy"}]},
     "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
     "provision": {"type": "permit",
                   "actor": [{"role": {"text": "recipient"}, "reference": {"reference": "Organization/shelter"}}]}},
    {"resourceType": "Task", "id": "task-1", "status": "requested", "intent": "order",
     "focus": {"reference": "ServiceRequest/referral"}, "for": {"reference": "Patient/zoe"},
     "owner": {"reference": "Organization/shelter"}, "requester": {"reference": "Practitioner/dr-roy"},
     "authoredOn": "2024-02-01T10:00:00Z", "businessStatus": {"text": "Awaiting intake"}},
    {"resourceType": "Task", "id": "task-2", "status": "completed", "intent": "filler-order",
     "focus": {"reference": "ServiceRequest/referral"}, "for": {"reference": "Patient/zoe"},
     "owner": {"reference": "Organization/clinic"}, "partOf": [{"reference": "Task/task-1"}],
     "authoredOn": "2024-03-05T10:00:00Z"},
    {"resourceType": "Task", "id": "task-3", "status": "requested", "intent": "order",
     "for": {"reference": "Patient/zola"}, "owner": {"reference": "Organization/shelter"},
     "authoredOn": "2023-12-24"},
    {"resourceType": "Observation", "id": "phq9", "status": "final", "subject": {"reference": "Patient/zoe"},
     "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6", "display": "PHQ-9 total score"}]},
     "effectiveDateTime": "2024-02-10T09:30:00-05:00",
     "valueQuantity": {"value": 14, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}},
    {"resourceType": "Observation", "id": "gad7", "status": "final", "subject": {"reference": "Patient/zola"},
     "code": {"coding": [{"system": "http://loinc.org", "code": "70274-6"}]},
     "effectiveDateTime": "2024-02-11", "valueQuantity": {"value": 5.5, "unit": "{score}"}},
    {"resourceType": "Encounter", "id": "visit", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "subject": {"reference": "Patient/zoe"}, "length": {"value": 45, "unit": "min",
                                                          "system": "http://unitsofmeasure.org", "code": "min"}},
    {"resourceType": "Communication", "id": "note", "status": "completed", "subject": {"reference": "Patient/zoe"},
     "sender": {"reference": "Organization/shelter"}, "recipient": [{"reference": "Practitioner/dr-roy"}],
     "sent": "2024-02-03T12:00:00Z"},
]


@pytest.fixture
def network(fhir):
    for resource in NETWORK:
        response = fhir.put(f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code == 201, body(response)
    return fhir


def search(fhir, path: str, status: int = 200) -> dict:
    response = fhir.get(path)
    assert response.status_code == status, body(response)
    return body(response)


def ids(bundle: dict, mode: str = "match") -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] == mode]


def found(fhir, path: str) -> set[str]:
    return set(ids(search(fhir, path)))


def link(bundle: dict, relation: str) -> str | None:
    return next((l["url"] for l in bundle["link"] if l["relation"] == relation), None)


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# --- the bundle ---------------------------------------------------------------------------------------


def test_type_search_answers_a_searchset_with_absolute_full_urls_and_match_mode(network):
    bundle = search(network, "/fhir/CarePlan?patient=Patient/zoe&status=active")
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 1
    [entry] = bundle["entry"]
    assert entry["fullUrl"] == "http://localhost/fhir/CarePlan/plan-zoe"
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"]["id"] == "plan-zoe"
    self_link = link(bundle, "self")
    assert self_link.startswith("http://localhost/fhir/CarePlan?") and link(bundle, "first") == self_link
    assert ("patient", "Patient/zoe") in parse_qsl(urlsplit(self_link).query)


def test_search_with_no_parameters_lists_the_type(network):
    assert found(network, "/fhir/Goal") == {"Goal/sleep", "Goal/housing"}


def test_deleted_resources_are_not_found(network):
    network.delete("/fhir/Goal/housing")
    assert found(network, "/fhir/Goal") == {"Goal/sleep"}
    assert found(network, "/fhir/Goal?patient=zola") == set()


def test_unknown_type_is_404(network):
    response = network.get("/fhir/Spaceship?name=x")
    assert response.status_code == 404
    outcome(response)


# --- token --------------------------------------------------------------------------------------------


def test_token_code_system_and_code_no_system_and_system_only(network):
    assert found(network, "/fhir/Patient?identifier=1001") == {"Patient/zoe", "Patient/marc"}
    assert found(network, "/fhir/Patient?identifier=urn:mrn|1001") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?identifier=urn:other|") == {"Patient/marc"}
    assert found(network, "/fhir/Goal?lifecycle-status=|active") == {"Goal/sleep"}
    assert found(network, "/fhir/Observation?code=http://loinc.org|44261-6") == {"Observation/phq9"}
    assert found(network, "/fhir/Observation?code=http://snomed.info/sct|44261-6") == set()


def test_token_not_includes_resources_without_the_value(network):
    assert found(network, "/fhir/CarePlan?status:not=active") == {"CarePlan/plan-zola", "CarePlan/plan-old"}
    assert found(network, "/fhir/CarePlan?category:not=736378000") == {"CarePlan/plan-zola", "CarePlan/plan-old"}


def test_token_text_matches_display_and_text_case_insensitively(network):
    assert found(network, "/fhir/Condition?code:text=depress") == {"Condition/dep"}
    assert found(network, "/fhir/Condition?code:text=disorder") == {"Condition/dep"}
    assert found(network, "/fhir/CarePlan?category:text=MENTAL") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/Condition?code:text=anxiety") == set()


def test_meta_parameters_on_every_type(network):
    assert found(network, "/fhir/Patient?_tag=urn:tags|mh") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_profile=http://example.org/p/patient") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_security=R") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_id=zoe,marc") == {"Patient/zoe", "Patient/marc"}


def test_comma_is_or_and_repeating_is_and(network):
    assert found(network, "/fhir/CarePlan?status=active,draft") == {"CarePlan/plan-zoe", "CarePlan/plan-zola"}
    assert found(network, "/fhir/CarePlan?status=active,draft&status=draft,completed") == {"CarePlan/plan-zola"}


def test_escaped_comma_is_part_of_the_value(network):
    network.put("/fhir/Organization/comma", {"resourceType": "Organization", "id": "comma", "name": "Soins, Inc"})
    assert found(network, "/fhir/Organization?name=" + quote("Soins\\, Inc")) == {"Organization/comma"}


# --- string -------------------------------------------------------------------------------------------


def test_string_is_accent_and_case_insensitive_starts_with(network):
    assert found(network, "/fhir/Patient?name=zo") == {"Patient/zoe", "Patient/zola"}
    assert found(network, "/fhir/Patient?name=ZOË") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?family=angst") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?name=emile") == {"Patient/zola"}
    assert found(network, "/fhir/Patient?name=ola") == set()


def test_string_exact_and_contains(network):
    assert found(network, "/fhir/Patient?family:exact=Ångström") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?family:exact=angstrom") == set()
    assert found(network, "/fhir/Patient?name:contains=ola") == {"Patient/zola"}
    assert found(network, "/fhir/Organization?name:contains=havre") == {"Organization/shelter"}


# --- reference ----------------------------------------------------------------------------------------


def test_reference_forms(network):
    assert found(network, "/fhir/Task?owner=Organization/shelter") == {"Task/task-1", "Task/task-3"}
    assert found(network, "/fhir/Task?owner=shelter") == {"Task/task-1", "Task/task-3"}
    assert found(network, "/fhir/Task?owner:Organization=shelter") == {"Task/task-1", "Task/task-3"}
    assert found(network, "/fhir/Task?owner:Practitioner=shelter") == set()
    assert found(network, "/fhir/Task?owner=http://localhost/fhir/Organization/clinic") == {"Task/task-2"}
    assert found(network, "/fhir/Task?owner=http://elsewhere.example/fhir/Organization/clinic") == set()


def test_canonical_reference_matches_with_or_without_version(network):
    url = "http://example.org/PlanDefinition/recovery"
    assert found(network, f"/fhir/CarePlan?instantiates-canonical={url}") == {"CarePlan/plan-zoe"}
    assert found(network, f"/fhir/CarePlan?instantiates-canonical={quote(url + '|1.0')}") == {"CarePlan/plan-zoe"}


def test_care_coordination_parameters(network):
    assert found(network, "/fhir/CarePlan?goal=Goal/sleep") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/CarePlan?care-team=team") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/CarePlan?condition=Condition/dep") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/CarePlan?based-on=CarePlan/plan-zoe") == {"CarePlan/plan-zola"}
    assert found(network, "/fhir/CarePlan?activity-code=urn:act|peer") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/CarePlan?activity-date=2024-02-15") == set()  # inside, not containing
    assert found(network, "/fhir/CarePlan?activity-date=ap2024-02-15") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/Task?focus=ServiceRequest/referral") == {"Task/task-1", "Task/task-2"}
    assert found(network, "/fhir/Task?part-of=Task/task-1") == {"Task/task-2"}
    assert found(network, "/fhir/Task?requester=Practitioner/dr-roy") == {"Task/task-1"}
    assert found(network, "/fhir/Task?business-status:text=awaiting") == {"Task/task-1"}
    assert found(network, "/fhir/ServiceRequest?performer=Organization/shelter") == {"ServiceRequest/referral"}
    assert found(network, "/fhir/ServiceRequest?based-on=CarePlan/plan-zoe") == {"ServiceRequest/referral"}
    assert found(network, "/fhir/CareTeam?participant=Practitioner/dr-roy") == {"CareTeam/team"}
    assert found(network, "/fhir/Consent?actor=Organization/shelter") == {"Consent/consent"}
    assert found(network, "/fhir/Consent?scope=patient-privacy") == {"Consent/consent"}
    assert found(network, "/fhir/Communication?sender=Organization/shelter") == {"Communication/note"}
    assert found(network, "/fhir/Communication?sent=2024-02-03") == {"Communication/note"}
    assert found(network, "/fhir/Goal?target-date=2024-06") == {"Goal/sleep"}
    assert found(network, "/fhir/Patient?organization=Organization/clinic") == {"Patient/zoe"}
    assert found(network, "/fhir/Encounter?class=AMB") == {"Encounter/visit"}


# --- date ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, expected", [
    ("birthdate=1988-04-12", {"zoe"}),
    ("birthdate=1988-04", {"zoe"}),
    ("birthdate=1988", {"zoe"}),
    ("birthdate=eq1988-04-12", {"zoe"}),
    ("birthdate=ne1988-04-12", {"zola", "marc"}),
    ("birthdate=gt1988-04-12", {"zola"}),
    ("birthdate=ge1988-04-12", {"zoe", "zola"}),
    ("birthdate=lt1988-04-12", {"marc"}),
    ("birthdate=le1988-04-12", {"zoe", "marc"}),
    ("birthdate=sa1988", {"zola"}),
    ("birthdate=eb1988", {"marc"}),
    # ap widens by 10% of the distance from today: decades ago that is a few years
    ("birthdate=ap1990-11-25", {"zoe", "zola"}),
    ("birthdate=ge1980&birthdate=lt1989", {"zoe"}),
    ("birthdate=1988-04-12T12:00:00Z", set()),
])
def test_date_prefixes_compare_ranges(network, query, expected):
    assert found(network, f"/fhir/Patient?{query}") == {f"Patient/{i}" for i in expected}


def test_date_periods_and_precision(network):
    # plan-zoe runs 2024-01-15 .. 2024-07-15; plan-zola from 2023-05-01 with no end
    assert found(network, "/fhir/CarePlan?date=2024") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/CarePlan?date=ge2024-07-01") == {"CarePlan/plan-zoe", "CarePlan/plan-zola"}
    assert found(network, "/fhir/CarePlan?date=lt2020") == {"CarePlan/plan-old"}
    assert found(network, "/fhir/CarePlan?date=sa2023-12-31") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/CarePlan?date=eb2020") == {"CarePlan/plan-old"}
    # 09:30 at -05:00 is 14:30 UTC
    assert found(network, "/fhir/Observation?date=2024-02-10T14:30:00Z") == {"Observation/phq9"}
    assert found(network, "/fhir/Observation?date=" + quote("2024-02-10T09:30:00-05:00")) == {"Observation/phq9"}
    assert found(network, "/fhir/Task?authored-on=2024-02") == {"Task/task-1"}


def test_last_updated(network):
    stamp = search(network, "/fhir/Patient?_id=marc")["entry"][0]["resource"]["meta"]["lastUpdated"]
    assert "Patient/marc" in found(network, f"/fhir/Patient?_lastUpdated=ge{quote(stamp)}")
    assert found(network, "/fhir/Patient?_lastUpdated=lt2000-01-01") == set()
    assert len(found(network, "/fhir/Patient?_lastUpdated=gt2000-01-01")) == 3


@pytest.mark.parametrize("value", ["2024-13-01", "20240101", "xx2024", "ge", "2024-02-30", "next-week"])
def test_bad_date_is_400(network, value):
    response = network.get(f"/fhir/CarePlan?date={value}")
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["code"] in ("value", "invalid")


# --- number, quantity, uri, :missing ------------------------------------------------------------------


def test_quantity_with_prefixes_and_units(network):
    assert found(network, "/fhir/Observation?value-quantity=14") == {"Observation/phq9"}
    assert found(network, "/fhir/Observation?value-quantity=gt10") == {"Observation/phq9"}
    assert found(network, "/fhir/Observation?value-quantity=le5.5") == {"Observation/gad7"}
    assert found(network, "/fhir/Observation?value-quantity=5.5||{score}") == {"Observation/gad7"}
    assert found(network, "/fhir/Observation?value-quantity=" + quote("14|http://unitsofmeasure.org|{score}")) == {
        "Observation/phq9"}
    assert found(network, "/fhir/Observation?value-quantity=14||mg") == set()
    assert found(network, "/fhir/Observation?value-quantity=ap13") == {"Observation/phq9"}
    assert found(network, "/fhir/Encounter?length=gt30|http://unitsofmeasure.org|min") == {"Encounter/visit"}


def test_quantity_bad_number_is_400(network):
    response = network.get("/fhir/Observation?value-quantity=lots")
    assert response.status_code == 400
    outcome(response)


def test_uri_exact_above_and_below(network):
    assert found(network, "/fhir/Patient?_profile=http://example.org/p/patient") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_profile:below=http://example.org/p") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_profile:above=http://example.org/p/patient/v2") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_profile=http://example.org/p") == set()


def test_missing_on_each_type(network):
    assert found(network, "/fhir/Patient?link:missing=false") == {"Patient/marc"}
    assert found(network, "/fhir/CarePlan?goal:missing=true") == {"CarePlan/plan-old"}
    assert found(network, "/fhir/Goal?target-date:missing=true") == {"Goal/housing"}
    assert found(network, "/fhir/Organization?name:missing=false") == {"Organization/clinic",
                                                                        "Organization/shelter"}
    assert found(network, "/fhir/Observation?value-quantity:missing=true") == set()
    assert found(network, "/fhir/Patient?_tag:missing=false") == {"Patient/zoe"}
    response = network.get("/fhir/Patient?link:missing=maybe")
    assert response.status_code == 400


# --- chaining and _has --------------------------------------------------------------------------------


def test_chained_parameters(network):
    assert found(network, "/fhir/CarePlan?subject:Patient.identifier=urn:mrn|1002") == {"CarePlan/plan-zola"}
    assert found(network, "/fhir/CarePlan?patient.name=zoe") == {"CarePlan/plan-zoe", "CarePlan/plan-old"}
    assert found(network, "/fhir/Task?owner.name=harbour") == {"Task/task-1", "Task/task-3"}
    assert found(network, "/fhir/Task?owner:Organization.identifier=urn:org|CSL") == {"Task/task-2"}
    assert found(network, "/fhir/Task?focus:ServiceRequest.status=active") == {"Task/task-1", "Task/task-2"}
    assert found(network, "/fhir/Task?owner.name=nobody") == set()


def test_chain_does_not_follow_deleted_targets(network):
    network.delete("/fhir/Organization/shelter")
    assert found(network, "/fhir/Task?owner.name=harbour") == set()


def test_chain_on_a_non_reference_is_400(network):
    response = network.get("/fhir/CarePlan?status.name=x")
    assert response.status_code == 400
    outcome(response)


def test_reverse_chaining_with_has(network):
    assert found(network, "/fhir/Patient?_has:Observation:patient:code=44261-6") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_has:Observation:subject:code=70274-6") == {"Patient/zola"}
    assert found(network, "/fhir/ServiceRequest?_has:Task:focus:status=completed") == {"ServiceRequest/referral"}
    assert found(network, "/fhir/Organization?_has:Task:owner:status=requested") == {"Organization/shelter"}
    assert found(network, "/fhir/Patient?_has:Task:patient:_has:Task:part-of:status=completed") == {"Patient/zoe"}
    assert found(network, "/fhir/Patient?_has:Observation:patient:code=nothing") == set()


def test_bad_has_is_400(network):
    for query in ["_has:Observation:code=1", "_has:Spaceship:patient:code=1", "_has:Observation:status:code=1"]:
        response = network.get(f"/fhir/Patient?{query}")
        assert response.status_code == 400, query
        outcome(response)


# --- sorting ------------------------------------------------------------------------------------------


def test_sort_by_string_date_and_several_keys(network):
    assert ids(search(network, "/fhir/Patient?_sort=family")) == ["Patient/zoe", "Patient/marc", "Patient/zola"]
    assert ids(search(network, "/fhir/Patient?_sort=-birthdate")) == ["Patient/zola", "Patient/zoe", "Patient/marc"]
    assert ids(search(network, "/fhir/Task?_sort=status,-authored-on")) == ["Task/task-2", "Task/task-1",
                                                                             "Task/task-3"]
    assert ids(search(network, "/fhir/Patient?_sort=-_id")) == ["Patient/zola", "Patient/zoe", "Patient/marc"]


def test_sort_puts_resources_without_the_value_last(network):
    order = ids(search(network, "/fhir/Goal?_sort=target-date"))
    assert order == ["Goal/sleep", "Goal/housing"]
    order = ids(search(network, "/fhir/Goal?_sort=-target-date"))
    assert order == ["Goal/sleep", "Goal/housing"]


def test_sort_by_last_updated(network):
    network.put("/fhir/Patient/marc", {**NETWORK[5], "gender": "other"})
    assert ids(search(network, "/fhir/Patient?_sort=-_lastUpdated"))[0] == "Patient/marc"
    assert ids(search(network, "/fhir/Patient?_sort=_lastUpdated"))[-1] == "Patient/marc"


def test_sort_by_unknown_parameter_is_400(network):
    response = network.get("/fhir/Patient?_sort=shoe-size")
    assert response.status_code == 400
    outcome(response)


# --- _include and _revinclude -------------------------------------------------------------------------


def test_include_marks_included_resources(network):
    bundle = search(network, "/fhir/CarePlan?_id=plan-zoe&_include=CarePlan:goal&_include=CarePlan:subject")
    assert ids(bundle) == ["CarePlan/plan-zoe"]
    assert set(ids(bundle, "include")) == {"Goal/sleep", "Patient/zoe"}
    assert bundle["total"] == 1
    included = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert all(e["fullUrl"].startswith("http://localhost/fhir/") for e in included)


def test_include_with_target_type_and_wildcard(network):
    bundle = search(network, "/fhir/Task?_id=task-1&_include=Task:owner:Practitioner")
    assert ids(bundle, "include") == []
    bundle = search(network, "/fhir/Task?_id=task-1&_include=*")
    assert set(ids(bundle, "include")) == {"ServiceRequest/referral", "Patient/zoe", "Organization/shelter",
                                           "Practitioner/dr-roy"}


def test_task_focus_and_service_request_includes(network):
    bundle = search(network, "/fhir/Task?owner=Organization/shelter&status=requested&_include=Task:focus"
                             "&_include:iterate=ServiceRequest:based-on&_include:iterate=ServiceRequest:requester")
    assert set(ids(bundle)) == {"Task/task-1", "Task/task-3"}
    assert set(ids(bundle, "include")) == {"ServiceRequest/referral", "CarePlan/plan-zoe", "Practitioner/dr-roy"}


def test_include_without_iterate_does_not_follow_included(network):
    bundle = search(network, "/fhir/Task?_id=task-1&_include=Task:focus&_include=ServiceRequest:based-on")
    assert set(ids(bundle, "include")) == {"ServiceRequest/referral"}


def test_revinclude_and_iterate(network):
    bundle = search(network, "/fhir/ServiceRequest?_id=referral&_revinclude=Task:focus")
    assert set(ids(bundle, "include")) == {"Task/task-1", "Task/task-2"}
    bundle = search(network, "/fhir/CarePlan?_id=plan-zoe&_revinclude=ServiceRequest:based-on"
                             "&_revinclude:iterate=Task:focus")
    assert set(ids(bundle, "include")) == {"ServiceRequest/referral", "Task/task-1", "Task/task-2"}
    bundle = search(network, "/fhir/Patient?_id=zola&_revinclude=*")
    assert set(ids(bundle, "include")) == {"Goal/housing", "CarePlan/plan-zola", "Task/task-3",
                                           "Observation/gad7"}


def test_included_resources_are_not_repeated_and_matches_are_not_included_again(network):
    bundle = search(network, "/fhir/Task?_include=Task:part-of&_include=Task:focus")
    assert sorted(ids(bundle)) == ["Task/task-1", "Task/task-2", "Task/task-3"]
    assert ids(bundle, "include") == ["ServiceRequest/referral"]


def test_include_skips_deleted_targets(network):
    network.delete("/fhir/Goal/sleep")
    bundle = search(network, "/fhir/CarePlan?_id=plan-zoe&_include=CarePlan:goal")
    assert ids(bundle, "include") == []


@pytest.mark.parametrize("value", ["CarePlan", "CarePlan:status", "Spaceship:goal", "CarePlan:goal:Spaceship",
                                   "CarePlan:goal:Patient"])
def test_bad_include_is_400(network, value):
    response = network.get(f"/fhir/CarePlan?_include={value}")
    assert response.status_code == 400
    outcome(response)


# --- result shaping -----------------------------------------------------------------------------------


def test_count_zero_and_summary_count_give_the_total_only(network):
    for query in ["_count=0", "_summary=count"]:
        bundle = search(network, f"/fhir/Task?status=requested&{query}")
        assert bundle["total"] == 2 and "entry" not in bundle
        assert link(bundle, "next") is None


def test_total_none_leaves_the_total_out(network):
    bundle = search(network, "/fhir/Task?_total=none")
    assert "total" not in bundle and len(bundle["entry"]) == 3
    assert search(network, "/fhir/Task?_total=estimate")["total"] == 3
    assert search(network, "/fhir/Task?_total=accurate")["total"] == 3


def test_count_above_the_maximum_is_capped(network, app):
    maximum = app.config["CAREPLAN_SETTINGS"].max_page_size
    bundle = search(network, f"/fhir/Task?_count={maximum + 5}")
    assert ("_count", str(maximum)) in parse_qsl(urlsplit(link(bundle, "self")).query)


@pytest.mark.parametrize("query", ["_count=-1", "_count=ten", "_total=maybe", "_summary=short", "_elements=a.b"])
def test_bad_result_parameters_are_400(network, query):
    response = network.get(f"/fhir/Task?{query}")
    assert response.status_code == 400
    outcome(response)


def test_summary_true_keeps_summary_elements_and_marks_subsetted(network):
    bundle = search(network, "/fhir/CarePlan?_id=plan-zoe&_summary=true")
    resource = bundle["entry"][0]["resource"]
    assert {"status", "intent", "subject", "period", "category"} <= set(resource)
    assert "activity" not in resource and "goal" not in resource
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])


def test_summary_data_and_text(network):
    network.put("/fhir/Goal/sleep", {**NETWORK[6], "text": {"status": "generated",
                                                             "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Sleep</div>"}})
    resource = search(network, "/fhir/Goal?_id=sleep&_summary=data")["entry"][0]["resource"]
    assert "text" not in resource and resource["description"] == {"text": "Sleep"}
    resource = search(network, "/fhir/Goal?_id=sleep&_summary=text")["entry"][0]["resource"]
    assert "text" in resource and "target" not in resource and resource["lifecycleStatus"] == "active"


def test_elements_keeps_listed_and_mandatory_elements_of_matches_only(network):
    bundle = search(network, "/fhir/CarePlan?_id=plan-zoe&_elements=subject,goal&_include=CarePlan:goal")
    match = bundle["entry"][0]["resource"]
    assert set(match) == {"resourceType", "id", "meta", "subject", "goal", "status", "intent"}
    assert any(t["code"] == "SUBSETTED" for t in match["meta"]["tag"])
    included = bundle["entry"][1]["resource"]
    assert included["description"] == {"text": "Sleep"}


# --- POST _search, system search, compartments, $everything -------------------------------------------


def test_post_search_reads_the_form_body_and_the_url(network):
    response = network.client.post("/fhir/Task/_search?status=requested", data="owner=Organization%2Fshelter",
                                   content_type=FORM)
    assert response.status_code == 200
    bundle = body(response)
    assert set(ids(bundle)) == {"Task/task-1", "Task/task-3"}
    assert link(bundle, "self").startswith("http://localhost/fhir/Task?")


def test_post_search_refuses_other_bodies(network):
    response = network.client.post("/fhir/Task/_search", data='{"status": "requested"}',
                                   content_type="application/json")
    assert response.status_code == 415
    outcome(response)


def test_system_search(network):
    bundle = search(network, "/fhir?_type=Patient,Organization&_tag=urn:tags|mh")
    assert ids(bundle) == ["Patient/zoe"]
    bundle = search(network, "/fhir?_id=zoe,clinic")
    assert set(ids(bundle)) == {"Patient/zoe", "Organization/clinic"}
    assert search(network, "/fhir?_count=0")["total"] == len(NETWORK)
    bundle = search(network, "/fhir/_search?_type=Goal")
    assert set(ids(bundle)) == {"Goal/sleep", "Goal/housing"}
    response = network.client.post("/fhir/_search", data="_type=Task&status=completed", content_type=FORM)
    assert ids(body(response)) == ["Task/task-2"]


def test_system_search_with_type_specific_parameter(network):
    bundle = search(network, "/fhir?_type=CarePlan,Task&patient=Patient/zola")
    assert set(ids(bundle)) == {"CarePlan/plan-zola", "Task/task-3"}


def test_system_search_with_unknown_type_is_400(network):
    response = network.get("/fhir?_type=Spaceship")
    assert response.status_code == 400
    outcome(response)


def test_patient_compartment_search(network):
    assert found(network, "/fhir/Patient/zoe/CarePlan") == {"CarePlan/plan-zoe", "CarePlan/plan-old"}
    assert found(network, "/fhir/Patient/zoe/CarePlan?status=active") == {"CarePlan/plan-zoe"}
    assert found(network, "/fhir/Patient/zoe/Task") == {"Task/task-1", "Task/task-2"}
    assert found(network, "/fhir/Patient/zola/Observation") == {"Observation/gad7"}
    assert found(network, "/fhir/Patient/zoe/Patient") == {"Patient/zoe", "Patient/marc"}
    everything = found(network, "/fhir/Patient/zola/*")
    assert everything == {"Patient/zola", "Goal/housing", "CarePlan/plan-zola", "Task/task-3", "Observation/gad7"}


def test_compartment_of_unknown_patient_is_404_and_outside_types_are_400(network):
    assert network.get("/fhir/Patient/nobody/CarePlan").status_code == 404
    response = network.get("/fhir/Patient/zoe/Organization")
    assert response.status_code == 400
    outcome(response)
    assert network.get("/fhir/Encounter/visit/Observation").status_code == 404


def test_instance_history_still_routes_next_to_compartments(network):
    bundle = body(network.get("/fhir/Patient/zoe/_history"))
    assert bundle["type"] == "history"


def test_everything_returns_the_patient_and_its_compartment_paged(network):
    expected = {"Patient/zoe", "Patient/marc", "Goal/sleep", "Condition/dep", "CareTeam/team",
                "CarePlan/plan-zoe", "CarePlan/plan-old", "ServiceRequest/referral", "Task/task-1", "Task/task-2",
                "Observation/phq9", "Encounter/visit", "Consent/consent", "Communication/note"}
    seen = []
    page = search(network, "/fhir/Patient/zoe/$everything?_count=4")
    assert page["total"] == len(expected)
    while True:
        assert len(page.get("entry", [])) <= 4
        seen.extend(ids(page))
        following = link(page, "next")
        if following is None:
            break
        assert following.startswith("http://localhost/fhir/Patient/zoe/$everything?")
        page = search(network, relative(following))
    assert len(seen) == len(set(seen)) and set(seen) == expected


def test_everything_filters_by_type_and_since(network):
    assert found(network, "/fhir/Patient/zoe/$everything?_type=Task,Goal") == {"Task/task-1", "Task/task-2",
                                                                                 "Goal/sleep"}
    assert found(network, "/fhir/Patient/zoe/$everything?_since=2999-01-01T00:00:00Z") == set()
    assert network.get("/fhir/Patient/nobody/$everything").status_code == 404
    assert network.get("/fhir/Patient/zoe/$everything?_since=soon").status_code == 400


# --- unknown parameters and strict handling -----------------------------------------------------------


def test_unknown_parameters_are_ignored_and_left_out_of_the_self_link(network):
    bundle = search(network, "/fhir/CarePlan?status=active&shoe-size=42&_contained=true&code-value-concept=x")
    assert ids(bundle) == ["CarePlan/plan-zoe"]
    names = [k for k, _ in parse_qsl(urlsplit(link(bundle, "self")).query)]
    assert "status" in names and "shoe-size" not in names and "_contained" not in names


def test_strict_handling_names_the_unknown_parameter(network):
    response = network.get("/fhir/CarePlan?status=active&shoe-size=42", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    issue = outcome(response)["issue"][0]
    assert "shoe-size" in issue["diagnostics"] and issue["expression"] == ["shoe-size"]
    response = network.get("/fhir/CarePlan?status=active", headers={"Prefer": "handling=strict"})
    assert response.status_code == 200


def test_lenient_handling_is_the_default_and_can_be_asked_for(network):
    response = network.get("/fhir/CarePlan?shoe-size=42", headers={"Prefer": "handling=lenient"})
    assert response.status_code == 200


@pytest.mark.parametrize("query", ["status:exact=active", "date:text=2024", "subject:identifier=x",
                                   "status:below=x", "subject:Spaceship=1"])
def test_unsupported_modifiers_are_400_even_when_lenient(network, query):
    response = network.get(f"/fhir/CarePlan?{query}")
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize("cursor", ["garbage", "eyJ2IjoxfQ", "AAAAAAAAAAAAAAAAAAAAAA", "%F0%9F%92%A9"])
def test_garbled_cursor_is_400(network, cursor):
    response = network.get(f"/fhir/Task?_cursor={cursor}")
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["_cursor"]


def test_capability_statement_lists_search_parameters_the_engine_supports(network):
    statement = body(network.get("/fhir/metadata"))
    rest = statement["rest"][0]
    assert {"search-system"} <= {i["code"] for i in rest["interaction"]}
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert "search-type" in {i["code"] for i in observation["interaction"]}
    names = {p["name"] for p in observation["searchParam"]}
    assert {"code", "patient", "value-quantity", "_id", "_lastUpdated", "_tag", "_profile", "_security"} <= names
    assert not names & {"code-value-quantity", "_text", "_content", "_query"}
    assert {p["type"] for p in observation["searchParam"]} <= {"token", "string", "reference", "date", "number",
                                                                "quantity", "uri"}
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert patient["operation"][0]["name"] == "everything"
    careplan = next(r for r in rest["resource"] if r["type"] == "CarePlan")
    assert "CarePlan:goal" in careplan["searchInclude"]
