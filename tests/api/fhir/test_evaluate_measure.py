"""Measure/$evaluate-measure: summary and subject-list MeasureReports; the Measure resources seeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from careplan import seeding
from careplan.measures import fhir as measure_fhir
from careplan.search.parameters import DEFAULT_FHIR_DIR
from careplan.validation import validate_resource
from tests.api.fhir.conftest import body, outcome
from tests.careplan.measures import scenarios
from tests.careplan.measures.fixtures import Builder

PATH = "/fhir/Measure/ccp-within-30-days/$evaluate-measure"
SEPTEMBER = {"periodStart": "2026-09-01", "periodEnd": "2026-09-30"}
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"


@pytest.fixture
def identified(database):
    scenarios.identifications(Builder(database))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def populations(group: dict) -> dict:
    return {p["code"]["coding"][0]["code"]: p.get("count", p.get("_count")) for p in group["population"]}


def test_summary_report(client, identified):
    response = client.get(PATH, query_string={**SEPTEMBER, "reportType": "summary"})
    assert response.status_code == 200, response.get_data(as_text=True)
    report = body(response)
    validate_resource(report)
    assert (report["resourceType"], report["type"], report["status"]) == ("MeasureReport", "summary", "complete")
    assert report["measure"] == "https://careplan.example.org/fhir/Measure/ccp-within-30-days"
    assert report["period"] == {"start": "2026-09-01", "end": "2026-09-30"}
    (group,) = report["group"]
    assert populations(group) == {"denominator": 8, "numerator": 5}
    assert group["measureScore"] == {"value": 0.625}
    # every stratifier with data; gender: female 4 (3 in the numerator) and male 4 (2): both masked
    by_code = {s["code"][0]["coding"][0]["code"]: s for s in group["stratifier"]}
    assert {"age-band", "gender", "language"} <= set(by_code) and "race" not in by_code
    gender = {s["value"]["text"]: s for s in by_code["gender"]["stratum"]}
    masked = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "masked"}]}
    assert populations(gender["female"]) == {"denominator": masked, "numerator": masked}
    assert gender["male"]["measureScore"] == masked


def test_population_is_the_r4_name_of_summary_and_partial_dates_cover_the_month(client, identified):
    response = client.get(PATH, query_string={"periodStart": "2026-09", "periodEnd": "2026-09",
                                              "reportType": "population"})
    assert response.status_code == 200
    report = body(response)
    assert report["type"] == "summary" and report["period"] == {"start": "2026-09-01", "end": "2026-09-30"}
    assert populations(report["group"][0]) == {"denominator": 8, "numerator": 5}


def test_a_small_period_is_masked(client, identified):
    report = body(client.get(PATH, query_string={"periodStart": "2026-10-01", "periodEnd": "2026-10-31"}))
    masked = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "masked"}]}
    assert populations(report["group"][0]) == {"denominator": masked, "numerator": masked}
    validate_resource(report)


def test_subject_list_for_a_coordinator(client, identified, token_for):
    response = client.get(PATH, query_string={**SEPTEMBER, "reportType": "subject-list"},
                          headers=bearer(token_for(role="coordinator")))
    assert response.status_code == 200, response.get_data(as_text=True)
    report = body(response)
    validate_resource(report)
    assert report["type"] == "subject-list"
    lists = {c["id"]: sorted(e["item"]["reference"] for e in c.get("entry", [])) for c in report["contained"]}
    assert lists["numerator"] == ["Patient/p1", "Patient/p10", "Patient/p2", "Patient/p5", "Patient/p9"]
    assert len(lists["denominator"]) == 8
    (group,) = report["group"]
    results = {p["code"]["coding"][0]["code"]: p["subjectResults"]["reference"] for p in group["population"]}
    assert results == {"denominator": "#denominator", "numerator": "#numerator"}
    assert populations(group) == {"denominator": 8, "numerator": 5}


def test_who_may_ask_for_what(client, identified, token_for):
    partner = bearer(token_for(role="partner", organization="Organization/harbour"))
    ehr = bearer(token_for(role="ehr"))
    for headers, report_type, status in ((partner, "summary", 403), (partner, "subject-list", 403),
                                         (ehr, "summary", 200), (ehr, "subject-list", 403)):
        response = client.get(PATH, query_string={**SEPTEMBER, "reportType": report_type}, headers=headers)
        assert response.status_code == status, (report_type, response.get_data(as_text=True))
        if status == 403:
            outcome(response)
    no_scope = bearer(token_for(role="coordinator", scopes="system/Patient.rs"))
    assert client.get(PATH, query_string=SEPTEMBER, headers=no_scope).status_code == 403


def test_bad_requests_answer_operation_outcomes(client):
    for query in ({"periodEnd": "2026-09-30"}, {"periodStart": "2026-09-01"},
                  {**SEPTEMBER, "reportType": "subject"}, {**SEPTEMBER, "reportType": "everything"},
                  {"periodStart": "2026-10-01", "periodEnd": "2026-09-01"}, {"periodStart": "yesterday",
                                                                              "periodEnd": "2026-09-01"},
                  {"periodStart": "2026-13", "periodEnd": "2026-12"}, {"periodStart": "0001", "periodEnd": "2026"},
                  {"periodStart": "1900", "periodEnd": "2199"}):
        response = client.get(PATH, query_string=query)
        assert response.status_code == 400, (query, response.get_data(as_text=True))
        outcome(response)
    for path in ("/fhir/Measure/no-such/$evaluate-measure", "/fhir/Patient/p1/$evaluate-measure"):
        response = client.get(path, query_string=SEPTEMBER)
        assert response.status_code == 404
        outcome(response)


def test_capability_statement_lists_the_operation(client):
    statement = body(client.get("/fhir/metadata"))
    (rest,) = statement["rest"]
    measure = next(r for r in rest["resource"] if r["type"] == "Measure")
    assert measure["operation"] == [{"name": "evaluate-measure",
                                     "definition": "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"}]


def test_measure_files_match_the_definitions_and_are_seeded(client, database, tmp_path):
    folder = Path(DEFAULT_FHIR_DIR) / measure_fhir.FOLDER
    stored = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}
    generated = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in measure_fhir.write_files(tmp_path)}
    assert stored == generated, "run careplan.measures.fhir.write_files(Path('fhir')) after changing a definition"
    for resource in stored.values():
        validate_resource(resource)
    seeding.load(database, Path(DEFAULT_FHIR_DIR))
    measure = body(client.get("/fhir/Measure/practice-adoption"))
    assert measure["scoring"]["coding"][0]["code"] == "proportion"
    assert {p["code"]["coding"][0]["code"] for p in measure["group"][0]["population"]} == {
        "initial-population", "denominator", "denominator-exclusion", "numerator"}
    assert "tier" in {s["code"]["coding"][0]["code"] for s in measure["group"][0]["stratifier"]}
    found = body(client.get("/fhir/Measure", query_string={"url": measure["url"]}))
    assert [e["resource"]["id"] for e in found["entry"]] == ["practice-adoption"]
