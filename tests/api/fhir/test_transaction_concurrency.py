"""Concurrent transaction Bundles: conditional creates stay race-free inside a Bundle, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from careplan import jsonutil
from careplan.db import advisory_key
from careplan.store import service
from tests.api.fhir.conftest import body
from tests.api.fhir.test_transaction import ORG_ID, bundle, count, organization, post
from tests.factories import FHIR_JSON, patient

PARALLEL = 8


def _in_parallel(app, count_, send):
    barrier = threading.Barrier(count_)

    def run(n):
        client = app.test_client()
        barrier.wait()
        return send(client, n)

    with ThreadPoolExecutor(max_workers=count_) as pool:
        return list(pool.map(run, range(count_)))


def test_eight_parallel_transactions_creating_the_same_organization_leave_one(app, fhir):
    org_urn = "urn:uuid:6e2d3c1b-7f55-4f7c-8a0b-7c3f5e1f3b55"

    def send(client, n):
        sent = bundle(post(organization("SHARED"), org_urn, ifNoneExist=f"identifier={ORG_ID}|SHARED"),
                      post(patient(identifier=[{"system": "https://careplan.example.org/mrn", "value": f"P{n}"}],
                                   managingOrganization={"reference": org_urn})))
        return client.post("/fhir", data=jsonutil.dumps(sent), content_type=FHIR_JSON)

    responses = _in_parallel(app, PARALLEL, send)

    assert all(r.status_code == 200 for r in responses), [body(r) for r in responses if r.status_code != 200]
    org_statuses = sorted(body(r)["entry"][0]["response"]["status"] for r in responses)
    assert org_statuses == ["200 OK"] * (PARALLEL - 1) + ["201 Created"]
    org_ids = {body(r)["entry"][0]["resource"]["id"] for r in responses}
    assert len(org_ids) == 1
    assert count(fhir, "Organization") == 1
    assert count(fhir, "Patient") == PARALLEL
    references = {body(r)["entry"][1]["resource"]["managingOrganization"]["reference"] for r in responses}
    assert references == {f"Organization/{org_ids.pop()}"}


def test_bundles_lock_the_key_single_conditional_creates_lock(app, fhir, database):
    """A transaction's conditional create and a plain If-None-Exist create exclude each other (same lock)."""
    criteria = [("identifier", f"{ORG_ID}|MIXED")]
    assert service.conditional_lock_key("Organization", criteria) == \
        f"conditional:Organization?{sorted(criteria)}"
    assert isinstance(advisory_key(service.conditional_lock_key("Organization", criteria)), int)

    def send(client, n):
        if n % 2:
            return client.post("/fhir/Organization", data=jsonutil.dumps(organization("MIXED")),
                               content_type=FHIR_JSON, headers={"If-None-Exist": f"identifier={ORG_ID}|MIXED"})
        sent = bundle(post(organization("MIXED"), ifNoneExist=f"identifier={ORG_ID}|MIXED"))
        return client.post("/fhir", data=jsonutil.dumps(sent), content_type=FHIR_JSON)

    responses = _in_parallel(app, PARALLEL, send)
    assert all(r.status_code in (200, 201) for r in responses)
    assert count(fhir, "Organization") == 1
