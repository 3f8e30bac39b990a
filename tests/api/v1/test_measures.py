"""GET /api/v1/measures: definitions, monthly and weekly values by stratum, the drill-down, charts, who may see what."""

from __future__ import annotations

import base64

import pytest

from tests.careplan.measures import scenarios
from tests.careplan.measures.fixtures import Builder

SEPTEMBER = {"period": "month", "start": "2026-09-01", "end": "2026-10-31"}


@pytest.fixture
def build(database) -> Builder:
    return Builder(database)


@pytest.fixture
def identified(build):
    scenarios.identifications(build)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_list_names_every_measure_with_its_definition(client):
    response = client.get("/api/v1/measures")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [m["id"] for m in body["measures"]] == [
        "ccp-within-30-days", "days-to-ccp", "referral-response-within-sla", "closed-loop-30-days", "got-help",
        "days-to-first-contact", "follow-ups-on-time", "practice-adoption", "follow-up-7-days-after-hospitalisation"]
    first = body["measures"][0]
    assert first["kind"] == "proportion" and "30th day" in first["numerator"] and first["exclusions"]
    assert first["url"] == "https://careplan.example.org/fhir/Measure/ccp-within-30-days"
    assert "tier" not in first["stratifiers"] and "tier" in body["measures"][6]["stratifiers"]
    assert {s["id"] for s in body["stratifiers"]} >= {"age-band", "gender", "language", "housing", "race",
                                                       "income-quintile", "rurality", "disability"}
    assert body["small_cell_max"] == 4


def test_monthly_values_with_suppression(client, identified):
    response = client.get("/api/v1/measures/ccp-within-30-days", query_string=SEPTEMBER)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["kind"] == "proportion" and body["period"] == "month" and body["stratifier"] is None
    assert body["points"] == [
        {"period_start": "2026-09-01", "period_end": "2026-09-30", "numerator": 5, "denominator": 8,
         "value": 0.625, "suppressed": False},
        {"period_start": "2026-10-01", "period_end": "2026-10-31", "numerator": None, "denominator": None,
         "value": None, "suppressed": True}]


def test_weekly_and_stratified(client, identified):
    response = client.get("/api/v1/measures/days-to-ccp", query_string={
        "period": "week", "start": "2026-08-31", "end": "2026-09-27", "stratifier": "language"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [p["period_start"] for p in body["points"]] == ["2026-08-31", "2026-09-07", "2026-09-14", "2026-09-21"]
    # week of 31 Aug: p1 9, p2 18, p3 47 (p4 has no plan); 7 Sep: p5 7, p6 35; 14 Sep: p9 10, p10 1 (Sunday 20th);
    # 21 Sep: nobody
    assert [p["suppressed"] for p in body["points"]] == [True, True, True, False]
    assert body["points"][3] == {"period_start": "2026-09-21", "period_end": "2026-09-27", "numerator": None,
                                 "denominator": 0, "value": None, "suppressed": False}
    assert set(body["strata"]) == {"en", "fr"}
    assert all(p["suppressed"] or p["denominator"] == 0 for points in body["strata"].values() for p in points)


def test_bad_queries_answer_422_and_unknown_measures_404(client):
    for query in ({"period": "year"}, {"start": "2026-10-01", "end": "2026-09-01"}, {"stratifier": "star-sign"},
                  {"start": "not-a-date"}, {"period": "week", "start": "1901-01-01", "end": "2026-01-01"},
                  {"start": "0001-01-01"}):
        response = client.get("/api/v1/measures/got-help", query_string=query)
        assert response.status_code == 422, (query, response.get_json())
        assert response.get_json()["code"] == 422
    response = client.get("/api/v1/measures/got-help", query_string={"stratifier": "tier"})
    assert response.status_code == 422 and "stratifier" in response.get_json()["errors"]["query"]
    response = client.get("/api/v1/measures/no-such-measure")
    assert response.status_code == 404 and response.get_json()["code"] == 404
    response = client.get("/api/v1/measures/got-help/members")
    assert response.status_code == 422  # period_start is required


def test_drill_down_lists_members_and_is_audited(client, identified, token_for):
    token = token_for(role="coordinator")
    response = client.get("/api/v1/measures/ccp-within-30-days/members",
                          query_string={"period": "month", "period_start": "2026-09-15"}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["period_start"], body["period_end"]) == ("2026-09-01", "2026-09-30")
    assert sorted(m["reference"] for m in body["numerator"]) == [
        "Patient/p1", "Patient/p10", "Patient/p2", "Patient/p5", "Patient/p9"]
    assert len(body["denominator"]) == 8 and body["hidden"] == 0
    assert {m["reference"]: m["excluded"] for m in body["excluded"]} == {
        "Patient/p7": "episode cancelled", "Patient/p8": "died within 30 days of identification"}
    audit = client.get("/fhir/AuditEvent", query_string={"_count": "100"}).get_json()
    events = [e["resource"] for e in audit.get("entry", []) if any(
        "/api/v1/measures/ccp-within-30-days/members" in base64.b64decode(x.get("query", "")).decode()
        for x in e["resource"].get("entity", []))]
    assert len(events) == 1, "the drill-down is audited once"
    seen = {(x.get("what") or {}).get("reference") for x in events[0].get("entity", [])}
    assert {"Patient/p1", "Patient/p2", "Patient/p10"} <= seen


def test_drill_down_hides_patients_the_caller_may_not_see(client, identified, build, token_for):
    # p1 refuses disclosure of everything to this coordinator's organisation
    build.put({"resourceType": "Consent", "id": "deny-p1", "status": "active", "scope": scenarios.PRIVACY,
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": "Patient/p1"},
               "provision": {"type": "deny", "actor": [{
                   "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                        "code": "IRCP"}]},
                   "reference": {"reference": "Organization/north-clinic"}}]}}, "2026-01-01")
    token = token_for(role="coordinator", organization="Organization/north-clinic")
    response = client.get("/api/v1/measures/ccp-within-30-days/members",
                          query_string={"period_start": "2026-09-01"}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert "Patient/p1" not in {m["reference"] for m in body["denominator"]}
    assert body["hidden"] == 1 and len(body["denominator"]) == 7
    # the aggregate still counts everyone (suppression protects it)
    totals = client.get("/api/v1/measures/ccp-within-30-days", query_string=SEPTEMBER, headers=bearer(token))
    assert totals.get_json()["points"][0]["denominator"] == 8


def test_partners_and_ehr_may_not_use_the_measures_api(client, token_for):
    for role, organization in (("partner", "Organization/harbour"), ("ehr", None)):
        token = token_for(role=role, organization=organization)
        for path in ("/api/v1/measures", "/api/v1/measures/got-help",
                     "/api/v1/measures/got-help/members?period_start=2026-09-01"):
            response = client.get(path, headers=bearer(token))
            assert response.status_code == 403, (role, path, response.get_json())


def test_scopes_decide_between_aggregates_and_the_drill_down(client, token_for):
    token = token_for(role="coordinator", scopes="system/Measure.rs")
    assert client.get("/api/v1/measures", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/measures/got-help", headers=bearer(token)).status_code == 200
    response = client.get("/api/v1/measures/got-help/members", query_string={"period_start": "2026-09-01"},
                          headers=bearer(token))
    assert response.status_code == 403 and response.get_json()["error"] == "insufficient_scope"
    token = token_for(role="coordinator", scopes="system/Patient.rs")
    assert client.get("/api/v1/measures/got-help", headers=bearer(token)).status_code == 403


def test_charts_render_png_and_svg(client, identified):
    png = client.get("/api/v1/measures/ccp-within-30-days/chart.png", query_string=SEPTEMBER)
    assert png.status_code == 200, png.get_data(as_text=True)[:500]
    assert png.mimetype == "image/png" and png.data.startswith(b"\x89PNG\r\n\x1a\n")
    svg = client.get("/api/v1/measures/ccp-within-30-days/chart.svg",
                     query_string={**SEPTEMBER, "stratifier": "gender"})
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"<svg" in svg.data
    assert client.get("/api/v1/measures/nope/chart.png").status_code == 404


def test_every_measures_endpoint_has_a_scope_rule(app):
    from careplan.auth.scopes import API_V1_RULES

    routes = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("v1_measures.")]
    assert len(routes) == 5
    for rule in routes:
        assert dict(API_V1_RULES[rule.endpoint].methods).keys() >= {"GET"}, rule.endpoint


def test_measures_endpoints_conform_to_their_openapi_document(app, token_for, identified):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    headers = bearer(token_for(role="coordinator"))
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/api/v1/measures")]
    assert len(operations) == 5

    for operation in operations:
        @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy())
        def conforms(case):
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        conforms()
