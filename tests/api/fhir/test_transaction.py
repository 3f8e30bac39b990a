"""transaction: https://hl7.org/fhir/R4/http.html#transaction and https://hl7.org/fhir/R4/bundle.html#transaction"""

from __future__ import annotations

import base64
import dataclasses
import uuid

import pytest

from careplan import jsonutil
from tests.api.fhir.conftest import body, outcome
from tests.factories import FHIR_JSON, careplan, observation, patient

MRN = "https://careplan.example.org/mrn"
ORG_ID = "https://careplan.example.org/org"


def bundle(*entries, kind="transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource, full_url=None, **request) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource, url=None, full_url=None, **request) -> dict:
    entry = {"resource": resource,
             "request": {"method": "PUT", "url": url or f"{resource['resourceType']}/{resource['id']}", **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def call(method, url, **request) -> dict:
    return {"request": {"method": method, "url": url, **request}}


def organization(value="ORG-1", **overrides) -> dict:
    return {"resourceType": "Organization", "identifier": [{"system": ORG_ID, "value": value}],
            "name": "Maison de l'Écoute", **overrides}


def history_total(fhir, path="/fhir/_history") -> int:
    document = body(fhir.get(path))
    return document.get("total", len(document.get("entry", [])))


def count(fhir, resource_type) -> int:
    return body(fhir.get(f"/fhir/{resource_type}/_history"))["total"]


def test_transaction_creates_every_entry_and_resolves_urn_references_everywhere(fhir):
    patient_urn = "urn:uuid:7f0c3f2e-0d7e-4d34-9a57-0f9d1c1d1a01"
    org_urn = "urn:oid:1.2.3.4.5"
    plan = careplan(subject={"reference": patient_urn}, author={"reference": org_urn},
                    instantiatesUri=[patient_urn],
                    text={"status": "generated",
                          "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{patient_urn}">p</a></div>'})
    plan["contained"][0]["subject"] = {"reference": patient_urn}
    plan["activity"][0]["detail"]["extension"] = [{"url": "https://careplan.example.org/fhir/StructureDefinition/by",
                                                   "valueReference": {"reference": org_urn}}]
    communication = {"resourceType": "Communication", "status": "completed", "subject": {"reference": patient_urn},
                     "payload": [{"contentAttachment": {"url": patient_urn, "contentType": "application/fhir+json"}}]}
    sent = bundle(post(patient(), patient_urn), post(organization(), org_urn),
                  post(observation(subject={"reference": patient_urn}), f"urn:uuid:{uuid.uuid4()}"),
                  post(plan), post(communication))

    response = fhir.post("/fhir", sent)

    assert response.status_code == 200, body(response)
    result = body(response)
    assert result["resourceType"] == "Bundle" and result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 5
    stored_patient, stored_org, stored_observation, stored_plan, stored_communication = \
        [e["resource"] for e in result["entry"]]
    patient_ref = f"Patient/{stored_patient['id']}"
    assert stored_observation["subject"] == {"reference": patient_ref}
    assert stored_plan["subject"] == {"reference": patient_ref}
    assert stored_plan["author"] == {"reference": f"Organization/{stored_org['id']}"}
    assert stored_plan["contained"][0]["subject"] == {"reference": patient_ref}
    assert stored_plan["activity"][0]["detail"]["extension"][0]["valueReference"] == \
        {"reference": f"Organization/{stored_org['id']}"}
    assert stored_plan["instantiatesUri"] == [patient_ref]
    assert f'href="{patient_ref}"' in stored_plan["text"]["div"]
    assert stored_plan["goal"] == [{"reference": "#g1"}]  # local references are left alone
    assert stored_communication["payload"][0]["contentAttachment"]["url"] == patient_ref
    # What is stored is what the response showed.
    assert body(fhir.get(f"/fhir/CarePlan/{stored_plan['id']}")) == stored_plan


def test_response_entries_carry_status_location_etag_and_last_modified(fhir, client):
    response = fhir.post("/fhir", bundle(post(patient()), post(observation())))
    first = body(response)["entry"][0]
    stored = first["resource"]
    base = "http://localhost/fhir"
    assert first["fullUrl"] == f"{base}/Patient/{stored['id']}"
    assert first["response"]["location"] == f"{base}/Patient/{stored['id']}/_history/1"
    assert first["response"]["etag"] == 'W/"1"'
    assert first["response"]["lastModified"] == stored["meta"]["lastUpdated"]
    assert response.mimetype == FHIR_JSON


def test_a_failing_entry_rolls_back_every_entry_and_names_the_entry(fhir):
    bad = careplan(status="not-a-status")
    sent = bundle(post(patient()), post(observation()), post(organization()),
                  post(bad, "urn:uuid:0d6d3c8a-9c55-4f7c-8a0b-7c3f5e1f3b11"))

    response = fhir.post("/fhir", sent)

    assert response.status_code == 400
    issue = outcome(response)["issue"][0]
    assert "Bundle.entry[3]" in issue["diagnostics"]
    assert "urn:uuid:0d6d3c8a-9c55-4f7c-8a0b-7c3f5e1f3b11" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[3].resource.status"]
    assert history_total(fhir) == 0


def test_a_late_failure_after_writes_rolls_back_the_writes(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    sent = bundle(put(patient(id="p1", gender="male")), call("DELETE", "Patient/p1"),
                  put(patient(id="p2"), ifMatch='W/"3"'))
    response = fhir.post("/fhir", sent)
    assert response.status_code == 400  # p1 is both deleted and updated: two changes to one resource
    # The DELETE runs first and succeeds; the PUT after it fails its ifMatch and takes the delete back with it.
    response = fhir.post("/fhir", bundle(call("DELETE", "Patient/p1"), put(patient(id="p2"), ifMatch='W/"3"')))
    assert response.status_code == 412
    assert outcome(response)["issue"][0]["expression"] == ["Bundle.entry[1].request.ifMatch"]
    assert fhir.get("/fhir/Patient/p1").status_code == 200
    assert fhir.get("/fhir/Patient/p2").status_code == 404


def test_entries_run_in_the_order_the_specification_sets(fhir):
    fhir.put("/fhir/Patient/old", patient(id="old"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", identifier=[{"system": MRN, "value": "P1"}]))
    sent = bundle(
        call("GET", "Patient/p1"),  # reads run last: they see the update below
        put(patient(id="p1", identifier=[{"system": MRN, "value": "P1"}], gender="other")),
        post(patient(), ifNoneExist=f"identifier={MRN}|MRN-1001"),  # runs after the delete: nothing matches
        call("DELETE", "Patient/old"),
    )
    result = body(fhir.post("/fhir", sent))
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created", "204 No Content"]
    assert result["entry"][0]["resource"]["gender"] == "other"
    assert result["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert fhir.get("/fhir/Patient/old").status_code == 410


def test_conditional_create_finds_the_existing_resource_and_references_follow_it(fhir):
    existing = body(fhir.create(organization()))
    org_urn = "urn:uuid:9b2f2f0e-2c55-4f7c-8a0b-7c3f5e1f3b22"
    sent = bundle(post(organization(), org_urn, ifNoneExist=f"identifier={ORG_ID}|ORG-1"),
                  post(patient(managingOrganization={"reference": org_urn})))
    result = body(fhir.post("/fhir", sent))
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert result["entry"][0]["resource"]["id"] == existing["id"]
    assert result["entry"][1]["resource"]["managingOrganization"] == {"reference": f"Organization/{existing['id']}"}
    assert count(fhir, "Organization") == 1


def test_identical_conditional_creates_in_one_bundle_make_one_resource(fhir):
    criteria = f"identifier={ORG_ID}|ORG-1"
    sent = bundle(post(organization(), "urn:uuid:00000000-0000-4000-8000-000000000001", ifNoneExist=criteria),
                  post(organization(), "urn:uuid:00000000-0000-4000-8000-000000000002", ifNoneExist=criteria),
                  post(patient(managingOrganization={"reference": "urn:uuid:00000000-0000-4000-8000-000000000002"})))
    result = body(fhir.post("/fhir", sent))
    first, second, created_patient = result["entry"]
    assert first["response"]["status"] == "201 Created" and second["response"]["status"] == "200 OK"
    assert first["resource"]["id"] == second["resource"]["id"]
    assert created_patient["resource"]["managingOrganization"]["reference"] == f"Organization/{first['resource']['id']}"
    assert count(fhir, "Organization") == 1


def test_conditional_update_and_conditional_delete_inside_a_transaction(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1", identifier=[{"system": MRN, "value": "A"}]))
    fhir.put("/fhir/Patient/p2", patient(id="p2", identifier=[{"system": MRN, "value": "B"}]))
    sent = bundle(
        put(patient(identifier=[{"system": MRN, "value": "A"}], gender="male"), url=f"Patient?identifier={MRN}|A"),
        put(patient(identifier=[{"system": MRN, "value": "C"}]), url=f"Patient?identifier={MRN}|C"),
        call("DELETE", f"Patient?identifier={MRN}|B"),
    )
    result = body(fhir.post("/fhir", sent))
    assert [e["response"]["status"] for e in result["entry"]] == ["200 OK", "201 Created", "204 No Content"]
    assert result["entry"][0]["resource"]["id"] == "p1"
    assert body(fhir.get("/fhir/Patient/p1"))["gender"] == "male"
    assert fhir.get("/fhir/Patient/p2").status_code == 410
    assert fhir.get(f"/fhir/Patient/{result['entry'][1]['resource']['id']}").status_code == 200


def test_stale_if_match_fails_the_transaction_with_412(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))
    response = fhir.post("/fhir", bundle(post(observation()), put(patient(id="p1", gender="other"), ifMatch='W/"1"')))
    assert response.status_code == 412
    assert "Bundle.entry[1]" in outcome(response)["issue"][0]["diagnostics"]
    assert count(fhir, "Observation") == 0
    ok = fhir.post("/fhir", bundle(put(patient(id="p1", gender="other"), ifMatch='W/"2"')))
    assert body(ok)["entry"][0]["response"]["etag"] == 'W/"3"'


def test_conditional_references_resolve_in_the_transaction(fhir):
    org = body(fhir.create(organization()))
    sent = bundle(post(patient(managingOrganization={"reference": f"Organization?identifier={ORG_ID}|ORG-1"})),
                  post(careplan(subject={"reference": f"Patient?identifier={MRN}|MRN-1001"})))
    # The Patient the CarePlan names is created by this same Bundle: its conditional reference does not exist yet.
    response = fhir.post("/fhir", sent)
    assert response.status_code == 412
    issue = outcome(response)["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert count(fhir, "Patient") == 0

    result = body(fhir.post("/fhir", bundle(sent["entry"][0])))
    assert result["entry"][0]["resource"]["managingOrganization"] == {"reference": f"Organization/{org['id']}"}


def test_conditional_reference_to_a_resource_created_conditionally_in_the_same_bundle(fhir):
    criteria = f"identifier={ORG_ID}|NEW"
    sent = bundle(post(organization("NEW"), ifNoneExist=criteria),
                  post(patient(managingOrganization={"reference": f"Organization?{criteria}"})))
    result = body(fhir.post("/fhir", sent))
    org_id = result["entry"][0]["resource"]["id"]
    assert result["entry"][1]["resource"]["managingOrganization"] == {"reference": f"Organization/{org_id}"}


def test_conditional_reference_matching_several_fails_with_412(fhir):
    fhir.create(organization())
    fhir.create(organization())
    response = fhir.post("/fhir", bundle(post(patient(
        managingOrganization={"reference": f"Organization?identifier={ORG_ID}|ORG-1"}))))
    assert response.status_code == 412
    issue = outcome(response)["issue"][0]
    assert issue["code"] == "multiple-matches"
    assert issue["expression"] == ["Bundle.entry[0].resource.managingOrganization.reference"]


def test_unresolvable_urn_reference_is_400(fhir):
    dangling = {"reference": "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427"}
    response = fhir.post("/fhir", bundle(post(observation(subject=dangling))))
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject.reference"]


def test_duplicate_full_urls_and_two_writes_to_one_resource_are_400(fhir):
    urn = "urn:uuid:2c7a7d1e-3b55-4f7c-8a0b-7c3f5e1f3b33"
    response = fhir.post("/fhir", bundle(post(patient(), urn), post(observation(), urn)))
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["Bundle.entry[1].fullUrl"]

    response = fhir.post("/fhir", bundle(put(patient(id="same")), put(patient(id="same", gender="male"))))
    assert response.status_code == 400
    assert "Bundle.entry[0] and Bundle.entry[1]" in outcome(response)["issue"][0]["diagnostics"]
    assert history_total(fhir) == 0


def test_unsupported_resource_type_fails_the_transaction_clearly(fhir):
    claim = {"resourceType": "Claim", "status": "active"}
    response = fhir.post("/fhir", bundle(post(patient()), {"resource": claim, "request": {"method": "POST",
                                                                                           "url": "Claim"}}))
    assert response.status_code == 404
    issue = outcome(response)["issue"][0]
    assert issue["code"] == "not-supported" and "Claim" in issue["diagnostics"] and "Bundle.entry[1]" in \
        issue["diagnostics"]
    assert history_total(fhir) == 0


def test_patch_entry_applies_a_json_patch_carried_as_binary(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    operations = [{"op": "replace", "path": "/gender", "value": "male"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(jsonutil.dumps(operations).encode()).decode()}
    result = body(fhir.post("/fhir", bundle({"resource": binary, "request": {"method": "PATCH", "url": "Patient/p1"}})))
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert body(fhir.get("/fhir/Patient/p1"))["gender"] == "male"


def test_read_and_vread_entries_and_a_missing_read_fails_the_transaction(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))
    result = body(fhir.post("/fhir", bundle(call("GET", "Patient/p1"), call("GET", "Patient/p1/_history/1"))))
    assert [e["resource"]["meta"]["versionId"] for e in result["entry"]] == ["2", "1"]
    response = fhir.post("/fhir", bundle(post(observation()), call("GET", "Patient/nope")))
    assert response.status_code == 404
    assert count(fhir, "Observation") == 0


def test_prefer_minimal_and_operation_outcome(fhir):
    minimal = body(fhir.post("/fhir", bundle(post(patient())), headers={"Prefer": "return=minimal"}))
    entry = minimal["entry"][0]
    assert "resource" not in entry and entry["response"]["status"] == "201 Created"
    assert entry["response"]["location"].endswith("/_history/1")
    informative = body(fhir.post("/fhir", bundle(post(patient())), headers={"Prefer": "return=OperationOutcome"}))
    entry = informative["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_audit_events_cannot_be_written_through_a_bundle(fhir):
    audit = {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                    "code": "110110"},
             "recorded": "2026-11-22T10:00:00Z", "agent": [{"requestor": True, "who": {"display": "x"}}],
             "source": {"observer": {"display": "careplan"}}}
    response = fhir.post("/fhir", bundle(post(audit)))
    assert response.status_code == 405


def test_absolute_full_urls_are_resolved_in_absolute_and_relative_references(fhir):
    base = "https://ehr.example.org/fhir"
    sent = bundle(post(patient(), f"{base}/Patient/ehr-1"),
                  post(observation(subject={"reference": f"{base}/Patient/ehr-1"}), f"{base}/Observation/o1"),
                  post(observation(subject={"reference": "Patient/ehr-1"}), f"{base}/Observation/o2"))
    result = body(fhir.post("/fhir", sent))
    patient_ref = f"Patient/{result['entry'][0]['resource']['id']}"
    assert result["entry"][1]["resource"]["subject"]["reference"] == patient_ref
    assert result["entry"][2]["resource"]["subject"]["reference"] == patient_ref


@pytest.mark.parametrize("document, status, expression", [
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, 400, "Bundle.type"),
    ({"resourceType": "Patient"}, 400, "Bundle.resourceType"),
    (bundle({"request": {"method": "POST", "url": "Patient"}}), 400, "Bundle.entry[0].resource"),
    (bundle({"resource": {"resourceType": "Patient"}, "request": {"method": "FETCH", "url": "Patient"}}), 400,
     "Bundle.entry[0].request.method"),
    (bundle(post(observation()) | {"request": {"method": "POST", "url": "Patient"}}), 400,
     "Bundle.entry[0].resource.resourceType"),
    (bundle(call("GET", "Patient/p1/_history")), 400, "Bundle.entry[0].request.url"),
    (bundle(put(patient(id="a"), url="Patient/b")), 400, "Bundle.entry[0].resource.id"),
])
def test_malformed_bundles_and_entries_are_400(fhir, document, status, expression):
    response = fhir.post("/fhir", document)
    assert response.status_code == status
    assert outcome(response)["issue"][0]["expression"] == [expression]


def test_xml_and_non_json_bodies_are_refused(fhir):
    assert fhir.post("/fhir", "<Bundle/>", content_type="application/fhir+xml").status_code == 415
    response = fhir.post("/fhir", "{not json")
    assert response.status_code == 400 and outcome(response)["issue"][0]["code"] == "structure"


def test_empty_transaction_answers_an_empty_response(fhir):
    result = body(fhir.post("/fhir", {"resourceType": "Bundle", "type": "transaction"}))
    assert result["type"] == "transaction-response" and result["entry"] == []


def test_entry_limit_answers_413(app, fhir):
    settings = app.config["CAREPLAN_SETTINGS"]
    app.config["CAREPLAN_SETTINGS"] = dataclasses.replace(settings, max_bundle_entries=2)
    response = fhir.post("/fhir", bundle(post(patient()), post(patient()), post(patient())))
    assert response.status_code == 413
    assert outcome(response)["issue"][0]["code"] == "too-long"
    assert fhir.post("/fhir", bundle(post(patient()), post(patient()))).status_code == 200


def test_bundle_body_limit_is_its_own_setting(app, fhir):
    sent = bundle(*[post(patient()) for _ in range(3)])
    size = len(jsonutil.dumps(sent).encode())
    settings = app.config["CAREPLAN_SETTINGS"]
    # Larger than the single-resource limit is fine for a Bundle...
    app.config["MAX_CONTENT_LENGTH"] = size // 2
    assert fhir.post("/fhir", sent).status_code == 200
    assert fhir.post("/fhir/Patient", jsonutil.dumps(patient()) + " " * size).status_code == 413
    # ...and the Bundle limit answers 413 as an OperationOutcome.
    app.config["CAREPLAN_SETTINGS"] = dataclasses.replace(settings, max_bundle_bytes=size - 1)
    response = fhir.post("/fhir", sent)
    assert response.status_code == 413
    assert outcome(response)["issue"][0]["code"] == "too-long"


def test_capability_statement_lists_transaction_and_batch(fhir):
    statement = body(fhir.get("/fhir/metadata"))
    codes = {i["code"] for i in statement["rest"][0]["interaction"]}
    assert {"transaction", "batch"} <= codes


def test_conditional_create_matching_several_is_412_at_if_none_exist(fhir):
    fhir.create(organization())
    fhir.create(organization())
    response = fhir.post("/fhir", bundle(post(organization(), ifNoneExist=f"identifier={ORG_ID}|ORG-1")))
    assert response.status_code == 412
    issue = outcome(response)["issue"][0]
    assert issue["code"] == "multiple-matches"
    assert issue["expression"] == ["Bundle.entry[0].request.ifNoneExist"]


def test_conditional_patch_and_missing_target(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1", identifier=[{"system": MRN, "value": "A"}]))
    operations = [{"op": "add", "path": "/active", "value": False}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(jsonutil.dumps(operations).encode()).decode()}
    patched = fhir.post("/fhir", bundle({"resource": binary,
                                         "request": {"method": "PATCH", "url": f"Patient?identifier={MRN}|A"}}))
    assert body(patched)["entry"][0]["resource"]["active"] is False
    missing = fhir.post("/fhir", bundle({"resource": binary,
                                         "request": {"method": "PATCH", "url": f"Patient?identifier={MRN}|Z"}}))
    assert missing.status_code == 404
    assert outcome(missing)["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]


def test_bundle_limits_are_read_from_the_environment():
    from careplan.config import from_env

    settings = from_env({"CAREPLAN_MAX_BUNDLE_ENTRIES": "25", "CAREPLAN_MAX_BUNDLE_BYTES": "4096"})
    assert (settings.max_bundle_entries, settings.max_bundle_bytes) == (25, 4096)
    defaults = from_env({})
    assert (defaults.max_bundle_entries, defaults.max_bundle_bytes) == (10000, 100 * 1024 * 1024)
