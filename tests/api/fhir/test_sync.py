"""Incremental sync: polling history with _since from Bundle.meta.lastUpdated never misses a write."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from careplan.store import service
from tests.api.fhir.conftest import body
from tests.factories import patient


def _ids(bundle: dict) -> list[str]:
    return [e["fullUrl"].rsplit("/", 1)[-1] for e in bundle.get("entry", [])]


def test_a_transaction_open_during_a_poll_is_returned_by_the_next_poll(app, fhir, database):
    fhir.put("/fhir/Patient/before", patient(id="before"))
    first = body(fhir.get("/fhir/Patient/_history?_since=2000-01-01T00:00:00Z"))
    assert _ids(first) == ["before"]
    since = first["meta"]["lastUpdated"]

    written, release = threading.Event(), threading.Event()

    def slow_writer():
        with database.writing() as session:
            service.create_in(session, resource=patient(id="ignored"), resource_id="slow")
            written.set()
            release.wait(10)  # still open while the EHR polls

    with ThreadPoolExecutor(max_workers=2) as pool:
        writer = pool.submit(slow_writer)
        assert written.wait(10)
        # The poll must not report a horizon past the open transaction (on SQLite it waits for the writer).
        second_poll = pool.submit(lambda: body(app.test_client().get(f"/fhir/Patient/_history?_since={since}")))
        time.sleep(0.3)
        release.set()
        writer.result(10)
        second = second_poll.result(10)

    third = body(fhir.get(f"/fhir/Patient/_history?_since={second['meta']['lastUpdated']}"))
    assert "slow" in _ids(second) + _ids(third)


def test_polls_chain_without_gaps(fhir):
    since = "2000-01-01T00:00:00Z"
    seen = []
    for n in range(5):
        fhir.put(f"/fhir/Patient/p{n}", patient(id=f"p{n}"))
        poll = body(fhir.get(f"/fhir/Patient/_history?_since={since}"))
        seen.extend(_ids(poll))
        since = poll["meta"]["lastUpdated"]
    assert set(seen) == {f"p{n}" for n in range(5)}


def test_every_page_of_one_walk_reports_the_same_horizon(fhir):
    for n in range(5):
        fhir.put(f"/fhir/Patient/p{n}", patient(id=f"p{n}"))
    page = body(fhir.get("/fhir/Patient/_history?_count=2"))
    horizon = page["meta"]["lastUpdated"]
    while nxt := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        fhir.put("/fhir/Patient/later", patient(id="later", gender="male"))
        page = body(fhir.get(nxt[0].split("/fhir", 1)[1].join(["/fhir", ""])))
        assert page["meta"]["lastUpdated"] == horizon


def test_versions_of_one_resource_have_increasing_last_updated(fhir):
    for gender in ("male", "female", "other"):
        fhir.put("/fhir/Patient/p1", patient(id="p1", gender=gender))
    stamps = [e["response"]["lastModified"] for e in body(fhir.get("/fhir/Patient/p1/_history"))["entry"]]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 3


def test_lastupdated_search_polls_never_miss_a_slow_transaction(app, fhir, database):
    fhir.put("/fhir/Patient/before", patient(id="before"))
    first = body(fhir.get("/fhir/Patient?_lastUpdated=gt2000-01-01T00:00:00Z"))
    since = first["meta"]["lastUpdated"]
    written, release = threading.Event(), threading.Event()

    def slow_writer():
        with database.writing() as session:
            service.create_in(session, resource=patient(), resource_id="slow")
            written.set()
            release.wait(10)

    with ThreadPoolExecutor(max_workers=2) as pool:
        writer = pool.submit(slow_writer)
        assert written.wait(10)
        second_poll = pool.submit(lambda: body(app.test_client().get(f"/fhir/Patient?_lastUpdated=gt{since}")))
        time.sleep(0.3)
        release.set()
        writer.result(10)
        second = second_poll.result(10)
    third = body(fhir.get(f"/fhir/Patient?_lastUpdated=gt{second['meta']['lastUpdated']}"))
    assert "slow" in _ids(second) + _ids(third)
