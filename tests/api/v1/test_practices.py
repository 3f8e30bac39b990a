"""The practice catalogue on /api/v1: list and choose in tier order; administrators change a tier, versioned."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from careplan.practices import catalogue
from careplan.practices.tiers import TIER_ORDER
from tests.careplan.practices.support import BASE, load_catalogue

NOTIFY = "notify-community-providers-of-admission"
HOSPITAL = "collaborate-in-hospital-on-care-plan"


@pytest.fixture
def stocked(database):
    """The starter catalogue, stored as `careplan seed` stores it."""
    load_catalogue(database)
    return [p for p in catalogue.load_files() if p["resourceType"] == "PlanDefinition"]


def _listed(client, query: str = "") -> list[dict]:
    response = client.get(f"/api/v1/practices?limit=100{'&' + query if query else ''}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def _tier_ranks(items: list[dict]) -> list[int]:
    return [TIER_ORDER.index(i["tier"]) for i in items]


def test_listing_orders_recommended_promising_emerging_with_what_a_coordinator_needs(client, stocked, token_for):
    coordinator = {"Authorization": f"Bearer {token_for(role='coordinator')}"}
    response = client.get("/api/v1/practices?limit=100", headers=coordinator)
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert len(items) == len(stocked)
    assert _tier_ranks(items) == sorted(_tier_ranks(items)) and items[0]["tier"] == "recommended"
    assert items[-1]["tier"] == "emerging"
    by_id = {i["id"]: i for i in items}
    notify = by_id[NOTIFY]
    assert notify["tier"] == "promising" and notify["tier_source"].startswith("HQO-assessed: promising (")
    assert notify["reassessment_date"] == "2017-09"
    assert notify["endorsement"].startswith("Provincial spread with reassessment in one year")
    assert notify["url"] == f"{BASE}/PlanDefinition/{NOTIFY}" and notify["version"] == "1"
    assert notify["canonical"] == f"{BASE}/PlanDefinition/{NOTIFY}|1" and notify["version_id"] == "1"
    assert notify["themes"] == ["social-community-partnerships"]
    assert notify["evidence"][0]["url"].startswith("https://") and notify["evidence"][0]["display"]
    assert notify["follow_up"]["timing"]["repeat"]["periodUnit"] and notify["follow_up"]["every_days"] > 0
    assert notify["resource"]["resourceType"] == "PlanDefinition" and notify["description"]
    assert by_id["peer-support"]["service_categories"] == ["peer-support"]
    assert "housing-instability" in by_id["screen-for-social-needs"]["social_needs"]
    assert by_id[HOSPITAL]["reassessment_date"] is None


def test_filters_combine_and_keep_the_tier_order(client, stocked):
    equity = _listed(client, "theme=health-equity-sdoh")
    assert equity and all("health-equity-sdoh" in i["themes"] for i in equity)
    assert _tier_ranks(equity) == sorted(_tier_ranks(equity))
    assert {i["id"] for i in equity} == {p["id"] for p in stocked if "health-equity-sdoh" in catalogue.themes_of(p)}
    assert {i["tier"] for i in _listed(client, "tier=emerging")} == {"emerging"}
    assert [i["id"] for i in _listed(client, "need=housing-instability")] == ["screen-for-social-needs"]
    assert [i["id"] for i in _listed(client, "need=legal-needs")] == ["screen-for-social-needs"]
    assert [i["id"] for i in _listed(client, "category=peer-support")] == ["peer-support"]
    assert [i["id"] for i in _listed(client, "text=PEER SUPPORT WORKER")] == ["peer-support"]
    assert _listed(client, "category=peer-support&tier=recommended") == []
    both = _listed(client, "theme=trust-relationships&tier=recommended")
    assert both and all(i["tier"] == "recommended" and "trust-relationships" in i["themes"] for i in both)
    refused = client.get("/api/v1/practices?tier=gold")
    assert refused.status_code == 422 and "tier" in refused.get_json()["errors"]["query"]


def test_retired_practices_are_left_out_unless_asked(client, stocked, database):
    from careplan.store import service

    retired = {**next(p for p in stocked if p["id"] == "peer-support"), "status": "retired"}
    service.update(database, resource_type="PlanDefinition", resource_id="peer-support", resource=retired)
    assert "peer-support" not in {i["id"] for i in _listed(client)}
    assert "peer-support" in {i["id"] for i in _listed(client, "include_retired=true")}


def test_pages_follow_the_cursor_in_order(client, stocked):
    seen, url = [], "/api/v1/practices?limit=5"
    while url:
        page = client.get(url).get_json()
        assert len(page["items"]) <= 5
        seen += page["items"]
        url = page["next"]
    assert [i["id"] for i in seen] == [i["id"] for i in _listed(client)]
    bad = client.get("/api/v1/practices?cursor=not-a-cursor")
    assert bad.status_code == 422 and bad.get_json()["errors"] == {"query": {"cursor": ["not a cursor"]}}


def test_read_one_practice_with_its_etag(client, stocked):
    response = client.get(f"/api/v1/practices/{NOTIFY}")
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"1"'
    assert response.get_json()["tier"] == "promising"
    missing = client.get("/api/v1/practices/no-such-practice")
    assert missing.status_code == 404 and missing.get_json()["code"] == 404


def test_an_admin_changes_a_tier_as_a_new_audited_version(client, stocked):
    before = [i["id"] for i in _listed(client)]
    assert before.index(HOSPITAL) > before.index(NOTIFY)
    response = client.patch(f"/api/v1/practices/{HOSPITAL}", headers={"If-Match": 'W/"1"'},
                            json={"tier": "recommended", "reassessment_date": "2027-09-01"})
    assert response.status_code == 200, response.get_json()
    assert response.headers["ETag"] == 'W/"2"'
    changed = response.get_json()
    assert changed["tier"] == "recommended" and changed["reassessment_date"] == "2027-09-01"
    assert changed["tier_source"].startswith("programme-assessed: recommended, set through the coordination API on ")
    assert changed["version_id"] == "2" and changed["version"] == "1"  # the practice itself is unchanged

    listed = _listed(client)
    assert listed[[i["id"] for i in listed].index(HOSPITAL)]["tier"] == "recommended"
    assert _tier_ranks(listed) == sorted(_tier_ranks(listed))
    assert [i["id"] for i in listed].index(HOSPITAL) < [i["id"] for i in listed].index(NOTIFY)

    history = client.get(f"/fhir/PlanDefinition/{HOSPITAL}/_history").get_json()
    tiers = [next(e["valueCoding"]["code"] for e in entry["resource"]["extension"]
                  if e["url"].endswith("/practice-tier")) for entry in history["entry"]]
    assert tiers == ["recommended", "emerging"]
    events = client.get(f"/fhir/AuditEvent?entity=PlanDefinition/{HOSPITAL}/_history/2").get_json()
    assert events["total"] == 1

    # the reassessment date and the source are kept when only the tier moves again, and cleared on request
    again = client.patch(f"/api/v1/practices/{HOSPITAL}", json={"tier": "promising", "version": 2,
                                                                "tier_source": "programme-assessed: promising"})
    assert again.status_code == 200 and again.get_json()["reassessment_date"] == "2027-09-01"
    assert again.get_json()["tier_source"] == "programme-assessed: promising"
    cleared = client.patch(f"/api/v1/practices/{HOSPITAL}", headers={"If-Match": '"3"'},
                           json={"tier": "promising", "reassessment_date": None}).get_json()
    assert cleared["reassessment_date"] is None and cleared["tier_source"] == "programme-assessed: promising"


def test_two_admins_cannot_overwrite_each_other(client, stocked, token_for):
    other = {"Authorization": f"Bearer {token_for(role='admin')}"}
    etag = client.get(f"/api/v1/practices/{NOTIFY}").headers["ETag"]
    assert client.get(f"/api/v1/practices/{NOTIFY}", headers=other).headers["ETag"] == etag
    first = client.patch(f"/api/v1/practices/{NOTIFY}", headers={"If-Match": etag}, json={"tier": "recommended"})
    assert first.status_code == 200
    second = client.patch(f"/api/v1/practices/{NOTIFY}", headers={**other, "If-Match": etag},
                          json={"tier": "emerging"})
    assert second.status_code == 412
    assert 'current version is W/"2"' in second.get_json()["message"]
    assert client.get(f"/api/v1/practices/{NOTIFY}").get_json()["tier"] == "recommended"


def test_a_tier_change_needs_a_version_an_admin_and_a_tier(client, stocked, token_for):
    path = f"/api/v1/practices/{NOTIFY}"
    unguarded = client.patch(path, json={"tier": "recommended"})
    assert unguarded.status_code == 428 and unguarded.get_json()["errors"] == {"json": {"version": ["required"]}}
    assert client.patch(path, headers={"If-Match": "yesterday"}, json={"tier": "recommended"}).status_code == 422
    assert client.patch(path, headers={"If-Match": 'W/"1"'}, json={"tier": "recommended", "version": 2}
                        ).status_code == 422
    assert client.patch(path, headers={"If-Match": 'W/"1"'}, json={"tier": "gold"}).status_code == 422
    coordinator = {"Authorization": f"Bearer {token_for(role='coordinator')}", "If-Match": 'W/"1"'}
    refused = client.patch(path, headers=coordinator, json={"tier": "recommended"})
    assert refused.status_code == 403 and refused.get_json()["message"] == \
        "Only administrators change a practice's tier"
    assert client.patch("/api/v1/practices/nothing", headers={"If-Match": 'W/"1"'},
                        json={"tier": "recommended"}).status_code == 404
    assert client.get(path).headers["ETag"] == 'W/"1"'


def test_parallel_changes_from_the_same_version_leave_one_winner(app, client, stocked):
    barrier = threading.Barrier(2)

    def change(tier):
        other = app.test_client()
        barrier.wait()
        return other.patch(f"/api/v1/practices/{HOSPITAL}", headers={"If-Match": 'W/"1"'}, json={"tier": tier})

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(change, ["recommended", "promising"]))
    assert sorted(r.status_code for r in responses) == [200, 412]
    winner = next(r for r in responses if r.status_code == 200).get_json()["tier"]
    current = client.get(f"/api/v1/practices/{HOSPITAL}")
    assert current.headers["ETag"] == 'W/"2"' and current.get_json()["tier"] == winner
