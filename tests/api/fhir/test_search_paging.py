"""search paging: keyset cursors stay stable while other clients write (https://hl7.org/fhir/R4/http.html#paging)

What a client following `next` links gets: every resource that matched when the first page was read and still
exists, exactly once; nothing created after the first page; resources deleted meanwhile may be missing.
"""

import base64
import itertools
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from careplan import jsonutil
from tests.api.fhir.conftest import body, outcome


def task(n: int, *, status: str = "requested", authored: str | None = None) -> dict:
    resource = {"resourceType": "Task", "id": f"t{n:03d}", "status": status, "intent": "order",
                "for": {"reference": "Patient/p1"}}
    if authored:
        resource["authoredOn"] = authored
    return resource


def put(fhir, resource):
    response = fhir.put(f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), body(response)


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def next_link(bundle: dict) -> str | None:
    return next((l["url"] for l in bundle["link"] if l["relation"] == "next"), None)


def page_through(fhir, path: str, between=None) -> tuple[list[str], list[dict]]:
    """Follow next links from path, calling between(page_number) before each following page."""
    seen, pages = [], []
    response = fhir.get(path)
    assert response.status_code == 200, body(response)
    page = body(response)
    number = 0
    while True:
        pages.append(page)
        seen.extend(e["resource"]["id"] for e in page.get("entry", []) if e["search"]["mode"] == "match")
        following = next_link(page)
        if following is None:
            return seen, pages
        assert following.startswith("http://localhost/fhir/")
        number += 1
        if between:
            between(number)
        response = fhir.get(relative(following))
        assert response.status_code == 200, body(response)
        page = body(response)


def test_pages_cover_every_match_once_in_creation_order(fhir):
    for n in range(23):
        put(fhir, task(n))
    seen, pages = page_through(fhir, "/fhir/Task?status=requested&_count=5")
    assert seen == [f"t{n:03d}" for n in range(23)]
    assert [len(p["entry"]) for p in pages] == [5, 5, 5, 5, 3]
    assert all(p["total"] == 23 for p in pages)
    second = pages[1]
    relations = {l["relation"]: l["url"] for l in second["link"]}
    assert "_cursor" in relations["self"] and "_cursor" not in relations["first"]


def test_writes_between_pages_neither_repeat_nor_skip_rows_that_existed(fhir):
    for n in range(30):
        put(fhir, task(n))
    created, deleted = [], []

    def write(page_number):
        # new matching rows: after the snapshot, so never returned
        for k in range(3):
            n = 100 + page_number * 10 + k
            put(fhir, task(n))
            created.append(f"t{n:03d}")
        # rows already returned change: they must not come back
        put(fhir, {**task(page_number - 1), "priority": "urgent"})
        if page_number <= 4:  # while pages 1-4 have shown t000-t015 at most
            # a row not yet returned changes: it must still come exactly once
            put(fhir, {**task(30 - page_number), "priority": "stat"})
            # a row not yet returned is deleted: it may be skipped
            victim = f"t{15 + page_number:03d}"
            assert fhir.delete(f"/fhir/Task/{victim}").status_code in (200, 204)
            deleted.append(victim)

    seen, pages = page_through(fhir, "/fhir/Task?status=requested&_count=4", between=write)
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert not set(seen) & set(created), "a row created after the first page was returned"
    expected = {f"t{n:03d}" for n in range(30)} - set(deleted)
    assert expected <= set(seen), f"rows that existed were skipped: {expected - set(seen)}"
    assert {p["total"] for p in pages} == {30}


def test_sorted_paging_with_ties_and_missing_values_is_stable(fhir):
    dates = ["2024-01-01", "2024-01-01", None, "2024-02-01", "2024-01-01", None, "2023-12-31", "2024-02-01",
             "2024-01-01", None, "2024-03-01"]
    for n, authored in enumerate(dates):
        put(fhir, task(n, authored=authored))
    extra = itertools.count(200)
    for query in ["_sort=-authored-on", "_sort=authored-on", "_sort=status,-authored-on,_id"]:
        for size in (1, 3, 4):
            full = [e["resource"]["id"] for e in body(fhir.get(f"/fhir/Task?{query}&_count=500"))["entry"]]
            seen, _ = page_through(fhir, f"/fhir/Task?{query}&_count={size}",
                                   between=lambda n: put(fhir, task(next(extra), authored="2024-01-01")))
            assert seen == full, (query, size)
    ordered = [e["resource"].get("authoredOn") for e in
               body(fhir.get("/fhir/Task?_sort=-authored-on&_count=100&_id=" +
                             ",".join(f"t{n:03d}" for n in range(len(dates)))))["entry"]]
    present = [d for d in ordered if d]
    assert present == sorted(present, reverse=True) and ordered[-3:] == [None, None, None]


def test_paging_with_includes_follows_the_matches(fhir):
    put(fhir, {"resourceType": "Patient", "id": "p1"})
    for n in range(7):
        put(fhir, task(n))
    seen, pages = page_through(fhir, "/fhir/Task?_count=3&_include=Task:patient")
    assert seen == [f"t{n:03d}" for n in range(7)]
    for page in pages:
        included = [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "include"]
        assert included == ["p1"]


def test_concurrent_writer_thread_does_not_disturb_paging(app, fhir):
    for n in range(40):
        put(fhir, task(n))
    stop = threading.Event()
    errors = []

    def writer():
        client = app.test_client()
        n = 500
        while not stop.is_set() and n < 700:
            response = client.put(f"/fhir/Task/t{n:03d}", data=jsonutil.dumps(task(n)),
                                  content_type="application/fhir+json")
            if response.status_code not in (200, 201):
                errors.append(response.status_code)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen, _ = page_through(fhir, "/fhir/Task?status=requested&_count=6")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors
    originals = [s for s in seen if int(s[1:]) < 500]
    assert originals == [f"t{n:03d}" for n in range(40)]
    assert len(seen) == len(set(seen))


def test_tampered_cursor_is_400(fhir):
    for n in range(4):
        put(fhir, task(n))
    following = next_link(body(fhir.get("/fhir/Task?_count=2")))
    params = dict(parse_qsl(urlsplit(following).query))
    cursor = params["_cursor"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-3] ^= 0x01  # flip one bit in the JSON
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    response = fhir.get("/fhir/Task?" + urlencode({**params, "_cursor": tampered}))
    assert response.status_code == 400
    assert outcome(response)["issue"][0]["expression"] == ["_cursor"]


def test_cursor_reused_with_other_criteria_is_400(fhir):
    for n in range(4):
        put(fhir, task(n))
    following = next_link(body(fhir.get("/fhir/Task?status=requested&_count=2")))
    params = dict(parse_qsl(urlsplit(following).query))
    response = fhir.get("/fhir/Task?" + urlencode({**params, "status": "completed"}))
    assert response.status_code == 400
    outcome(response)
    # the page size may change between pages
    response = fhir.get("/fhir/Task?" + urlencode({**params, "_count": "1"}))
    assert response.status_code == 200


@pytest.mark.parametrize("count", [1, 7])
def test_post_search_next_links_are_get_links(fhir, count):
    for n in range(8):
        put(fhir, task(n))
    response = fhir.client.post("/fhir/Task/_search", data=f"status=requested&_count={count}",
                                content_type="application/x-www-form-urlencoded")
    following = next_link(body(response))
    assert urlsplit(following).path == "/fhir/Task"
    assert body(fhir.get(relative(following)))["entry"][0]["resource"]["id"] == f"t{count:03d}"
