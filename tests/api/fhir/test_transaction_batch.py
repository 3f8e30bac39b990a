"""batch: https://hl7.org/fhir/R4/http.html#transaction (batch rules) and https://hl7.org/fhir/R4/bundle.html"""

from __future__ import annotations

from tests.api.fhir.conftest import body, outcome
from tests.api.fhir.test_transaction import ORG_ID, bundle, call, count, organization, post, put
from tests.factories import careplan, observation, patient


def test_batch_entries_succeed_or_fail_on_their_own(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    sent = bundle(
        post(patient()),
        post(careplan(status="not-a-status")),
        call("GET", "Patient/p1"),
        call("GET", "Patient/missing"),
        put(patient(id="p1", gender="male"), ifMatch='W/"7"'),
        {"resource": {"resourceType": "Claim", "status": "active"}, "request": {"method": "POST", "url": "Claim"}},
        post(observation()),
        kind="batch",
    )
    response = fhir.post("/fhir", sent)
    assert response.status_code == 200
    result = body(response)
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "200 OK", "404 Not Found", "412 Precondition Failed",
                        "404 Not Found", "201 Created"]
    failed = result["entry"][1]["response"]["outcome"]
    assert failed["resourceType"] == "OperationOutcome"
    assert failed["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert "Claim" in result["entry"][5]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert "resource" not in result["entry"][1]
    assert result["entry"][2]["resource"]["id"] == "p1"
    assert count(fhir, "Patient") == 2 and count(fhir, "Observation") == 1
    assert body(fhir.get("/fhir/Patient/p1"))["meta"]["versionId"] == "1"


def test_batch_conditional_creates_are_idempotent(fhir):
    criteria = f"identifier={ORG_ID}|ORG-1"
    sent = bundle(post(organization(), ifNoneExist=criteria), kind="batch")
    first = body(fhir.post("/fhir", sent))["entry"][0]
    second = body(fhir.post("/fhir", sent))["entry"][0]
    assert first["response"]["status"] == "201 Created" and second["response"]["status"] == "200 OK"
    assert first["resource"]["id"] == second["resource"]["id"]
    assert count(fhir, "Organization") == 1


def test_batch_entries_do_not_reference_each_other(fhir):
    urn = "urn:uuid:5d1c2b0a-6e55-4f7c-8a0b-7c3f5e1f3b44"
    result = body(fhir.post("/fhir", bundle(post(patient(), urn),
                                            post(observation(subject={"reference": urn})), kind="batch")))
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "400 Bad Request"]
    issue = result["entry"][1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]


def test_batch_search_entry_returns_a_searchset(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))
    fhir.put("/fhir/Patient/p2", patient(id="p2", gender="female"))
    result = body(fhir.post("/fhir", bundle(call("GET", "Patient?gender=male"),
                                            call("GET", "Patient?birthdate=not-a-date"), kind="batch")))
    searchset = result["entry"][0]["resource"]
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert result["entry"][1]["response"]["status"] == "400 Bad Request"
    assert searchset["type"] == "searchset"
    assert [e["resource"]["id"] for e in searchset["entry"]] == ["p1"]


def test_transaction_search_entry_sees_the_transactions_own_writes(fhir):
    result = body(fhir.post("/fhir", bundle(call("GET", f"Organization?identifier={ORG_ID}|ORG-9"),
                                            post(organization("ORG-9")))))
    searchset = result["entry"][0]["resource"]
    assert [e["resource"]["id"] for e in searchset["entry"]] == [result["entry"][1]["resource"]["id"]]


def test_head_entry_answers_without_the_resource(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    entry = body(fhir.post("/fhir", bundle(call("HEAD", "Patient/p1"), kind="batch")))["entry"][0]
    assert entry["response"]["status"] == "200 OK" and entry["response"]["etag"] == 'W/"1"'
    assert "resource" not in entry


def test_if_none_match_on_a_read_entry_answers_304(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    entry = body(fhir.post("/fhir", bundle(call("GET", "Patient/p1", ifNoneMatch='W/"1"'), kind="batch")))["entry"][0]
    assert entry["response"]["status"] == "304 Not Modified" and "resource" not in entry


def test_batch_malformed_entry_fails_alone(fhir):
    result = body(fhir.post("/fhir", bundle({"request": {"method": "POST"}}, post(patient()), kind="batch")))
    first, second = result["entry"]
    assert first["response"]["status"] == "400 Bad Request"
    assert first["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
    assert second["response"]["status"] == "201 Created"


def test_non_object_entry_list_is_400(fhir):
    response = fhir.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": {"oops": 1}})
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["Bundle.entry"]
