"""No lost updates and race-free conditional creates, on SQLite and PostgreSQL."""

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.api.fhir.conftest import body
from tests.factories import FHIR_JSON, patient
from careplan import jsonutil


def _in_parallel(app, count, request):
    barrier = threading.Barrier(count)

    def run(n):
        client = app.test_client()
        barrier.wait()
        return request(client, n)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_sixteen_parallel_conditional_creates_leave_one_resource(app, fhir):
    headers = {"If-None-Exist": "identifier=https://careplan.example.org/mrn|MRN-1001"}
    responses = _in_parallel(app, 16, lambda c, n: c.post("/fhir/Patient", data=jsonutil.dumps(patient()),
                                                           content_type=FHIR_JSON, headers=headers))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 15 + [201]
    assert len({body(r)["id"] for r in responses}) == 1
    assert body(fhir.get("/fhir/Patient/_history"))["total"] == 1


def test_same_if_match_from_two_clients_gives_one_success_and_one_412(app, fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))

    for round_number in range(3):
        current = fhir.get("/fhir/Patient/p1").headers["ETag"]
        responses = _in_parallel(app, 2, lambda c, n: c.put(
            "/fhir/Patient/p1",
            data=jsonutil.dumps(patient(id="p1", gender=["male", "other"][n], multipleBirthInteger=round_number + 1)),
            content_type=FHIR_JSON, headers={"If-Match": current}))
        assert sorted(r.status_code for r in responses) == [200, 412]
        winner = next(r for r in responses if r.status_code == 200)
        assert body(fhir.get("/fhir/Patient/p1"))["gender"] == body(winner)["gender"]
    versions = body(fhir.get("/fhir/Patient/p1/_history"))["total"]
    assert versions == 4


def test_parallel_update_as_create_of_one_id_never_fails(app, fhir):
    responses = _in_parallel(app, 8, lambda c, n: c.put(
        "/fhir/Patient/same", data=jsonutil.dumps(patient(id="same", gender=["male", "female"][n % 2])),
        content_type=FHIR_JSON))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1 and all(s in (200, 201) for s in statuses)
    history = body(fhir.get("/fhir/Patient/same/_history"))
    assert [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]] == \
        list(range(history["total"], 0, -1))
