"""history at instance, type and system level: https://hl7.org/fhir/R4/http.html#history"""

from urllib.parse import urlsplit

from tests.api.fhir.conftest import body
from tests.factories import careplan, patient


def _relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_instance_history_lists_versions_newest_first_with_delete(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.put("/fhir/Patient/p1", patient(id="p1", gender="male"))
    fhir.delete("/fhir/Patient/p1")
    bundle = body(fhir.get("/fhir/Patient/p1/_history"))
    assert bundle["type"] == "history" and bundle["total"] == 3
    methods = [(e["request"]["method"], e["response"]["etag"]) for e in bundle["entry"]]
    assert methods == [("DELETE", 'W/"3"'), ("PUT", 'W/"2"'), ("PUT", 'W/"1"')]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["gender"] == "male"
    assert bundle["entry"][0]["fullUrl"].endswith("/fhir/Patient/p1")


def test_type_and_system_history_scope(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))
    fhir.create(careplan())
    assert body(fhir.get("/fhir/Patient/_history"))["total"] == 1
    assert body(fhir.get("/fhir/CarePlan/_history"))["total"] == 1
    system = body(fhir.get("/fhir/_history"))
    assert [e["resource"]["resourceType"] for e in system["entry"]] == ["CarePlan", "Patient"]


def test_history_pages_with_absolute_next_links_without_repeats(fhir):
    for n in range(7):
        fhir.put(f"/fhir/Patient/p{n}", patient(id=f"p{n}"))
    seen = []
    page = body(fhir.get("/fhir/Patient/_history?_count=3"))
    while True:
        seen.extend(e["resource"]["id"] for e in page["entry"])
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith("http://")
        # A write between pages must not shift the pages already promised.
        fhir.put("/fhir/Patient/late", patient(id="late"))
        page = body(fhir.get(_relative(nxt[0])))
    assert seen == [f"p{n}" for n in reversed(range(7))]


def test_history_since_filters_by_last_updated(fhir):
    fhir.put("/fhir/Patient/old", patient(id="old"))
    cutoff = body(fhir.get("/fhir/Patient/old"))["meta"]["lastUpdated"]
    fhir.put("/fhir/Patient/new", patient(id="new"))
    bundle = body(fhir.get(f"/fhir/Patient/_history?_since={cutoff.replace('+', '%2B')}"))
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert "new" in ids and ids[-1] in ("old", "new")
    later = body(fhir.get("/fhir/Patient/_history?_since=2999-01-01T00:00:00Z"))
    assert later["entry"] == [] and later["total"] == 0


def test_history_rejects_bad_parameters(fhir):
    assert fhir.get("/fhir/Patient/_history?_since=yesterday").status_code == 400
    assert fhir.get("/fhir/Patient/_history?_count=-1").status_code == 400
    assert fhir.get("/fhir/Patient/_history?_cursor=abc").status_code == 400


def test_history_of_unknown_resource_is_404(fhir):
    assert fhir.get("/fhir/Patient/nobody/_history").status_code == 404
