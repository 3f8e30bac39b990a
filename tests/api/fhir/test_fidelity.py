"""What an EHR stores comes back identical apart from id, meta.versionId and meta.lastUpdated."""

import pytest

from careplan import jsonutil
from tests.api.fhir.conftest import body
from tests.factories import careplan, observation, patient, strip_server_fields

RAW_OBSERVATION = """{
  "resourceType": "Observation",
  "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"],
           "tag": [{"system": "https://careplan.example.org/tags", "code": "imported"}],
           "versionId": "77", "lastUpdated": "2001-01-01T00:00:00Z"},
  "status": "final",
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
  "subject": {"reference": "Patient/p1"},
  "effectiveDateTime": "2026-10-02T14:00:00.120+05:30",
  "valueQuantity": {"value": 37.50, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
  "component": [{"code": {"text": "tiny"}, "valueQuantity": {"value": 0.000100}},
                {"code": {"text": "integer"}, "valueInteger": 12}],
  "note": [{"text": "Zoë said: \\"ça va\\" \\u2014 fine"}]
}"""


@pytest.mark.parametrize("factory", [patient, careplan, observation])
def test_round_trip_is_identical(fhir, factory):
    sent = factory()
    created = body(fhir.create(sent))
    assert strip_server_fields(created) == sent
    read_back = body(fhir.get(f"/fhir/{sent['resourceType']}/{created['id']}"))
    assert strip_server_fields(read_back) == sent


def test_decimals_dates_and_meta_keep_their_exact_text(fhir):
    response = fhir.post("/fhir/Observation", RAW_OBSERVATION)
    assert response.status_code == 201
    created_id = body(response)["id"]
    text = fhir.get(f"/fhir/Observation/{created_id}").get_data(as_text=True)
    assert '"value":37.50' in text
    assert '"value":0.000100' in text
    assert '"effectiveDateTime":"2026-10-02T14:00:00.120+05:30"' in text
    stored = jsonutil.loads(text)
    sent = jsonutil.loads(RAW_OBSERVATION)
    assert stored["meta"]["versionId"] == "1" and stored["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert stored["meta"]["profile"] == sent["meta"]["profile"] and stored["meta"]["tag"] == sent["meta"]["tag"]
    assert strip_server_fields(stored) == strip_server_fields(sent)
    assert stored["note"][0]["text"] == 'Zoë said: "ça va" \u2014 fine'


def test_update_and_history_keep_fidelity(fhir):
    first = body(fhir.post("/fhir/Observation", RAW_OBSERVATION))
    changed = {**first, "status": "amended"}
    fhir.put(f"/fhir/Observation/{first['id']}", changed)
    history = fhir.get(f"/fhir/Observation/{first['id']}/_history").get_data(as_text=True)
    assert history.count('"value":37.50') == 2


def test_primitive_extensions_and_contained_resources_survive(fhir):
    created = body(fhir.create(careplan()))
    assert created["contained"][0]["id"] == "g1"
    assert created["goal"] == [{"reference": "#g1"}]
    sent = patient()
    stored = body(fhir.create(sent))
    assert stored["_birthDate"] == sent["_birthDate"]
    assert stored["extension"] == sent["extension"]
