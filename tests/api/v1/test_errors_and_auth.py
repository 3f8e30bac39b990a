"""The one JSON error shape of /api/v1, authentication and the coordinator-only rule."""

from __future__ import annotations

import re


def test_openapi_and_docs_are_public(anonymous_client):
    spec = anonymous_client.get("/api/v1/openapi.json")
    assert spec.status_code == 200 and spec.get_json()["openapi"] == "3.0.3"
    for path, operations in spec.get_json()["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("summary"), f"{method} {path} has no summary"
            ok = next(str(code) for code in operation["responses"] if str(code).startswith("2"))
            content = operation["responses"][ok]["content"]
            if "application/json" in content:  # charts answer images
                assert "example" in content["application/json"], f"{method} {path} has no example"
    assert anonymous_client.get("/docs").status_code == 200


def test_the_openapi_document_written_on_first_read_is_whole_and_read_alike_by_concurrent_readers(app):
    from concurrent.futures import ThreadPoolExecutor

    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")}
    with ThreadPoolExecutor(4) as pool:
        documents = list(pool.map(lambda _: app.test_client().get("/api/v1/openapi.json").get_json(), range(4)))
    assert all(document == documents[0] for document in documents)
    paths = set(documents[0]["paths"])
    # Every /api/v1 route is documented (flask-smorest writes <int:id> as {id}), each blueprint's tag once.
    assert {re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", route) for route in routes} - paths == {
        "/api/v1/openapi.json"}
    tags = [tag["name"] for tag in documents[0]["tags"]]
    assert len(tags) == len(set(tags)) == 11 and "v1_worklist" in tags


def test_no_token_answers_401_in_the_error_shape(anonymous_client):
    response = anonymous_client.get("/api/v1/patients")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="careplan"')
    body = response.get_json()
    assert body["code"] == 401 and body["status"] == "Unauthorized" and body["message"]


def test_partner_token_is_refused_on_coordinator_endpoints(client, token_for):
    partner = token_for(role="partner", organization="Organization/shelter", scopes="system/*.cruds")
    for path in ("/api/v1/patients", "/api/v1/worklist"):
        response = client.get(path, headers={"Authorization": f"Bearer {partner}"})
        assert response.status_code == 403
        assert response.get_json() == {
            "code": 403, "status": "Forbidden",
            "message": "The coordination API is for coordinators; a partner client may not use it"}
    narrow = token_for(role="partner", organization="Organization/shelter", scopes="system/Task.rus")
    response = client.get("/api/v1/patients", headers={"Authorization": f"Bearer {narrow}"})
    assert response.status_code == 403 and response.get_json()["code"] == 403


def test_coordinator_token_may_enrol(client, token_for):
    coordinator = token_for(role="coordinator")
    response = client.post("/api/v1/patients", json={"family": "Roy"},
                           headers={"Authorization": f"Bearer {coordinator}"})
    assert response.status_code == 201


def test_unrouted_and_wrong_method_answer_the_error_shape(client):
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["message"] == "Nothing is served at /api/v1/nothing-here"
    wrong = client.delete("/api/v1/patients")
    assert wrong.status_code == 405 and wrong.get_json()["code"] == 405 and "GET" in wrong.headers["Allow"]


def test_fhir_errors_stay_operation_outcomes(client):
    response = client.get("/fhir/Nothing/1")
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient/nobody").get_json()["resourceType"] == "OperationOutcome"


def test_malformed_json_body_is_an_error_shape(client):
    response = client.post("/api/v1/patients", data="{not json", content_type="application/json")
    assert response.status_code in (400, 422)
    assert response.get_json()["code"] == response.status_code
