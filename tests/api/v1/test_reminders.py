"""GET /api/v1/reminders (filters, tier grouping, who sees what) and the dead-letter endpoints."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from careplan.reminders.models import Delivery, Reminder
from tests.api.v1.referral_world import HARBOUR, world  # noqa: F401 - the fixture
from tests.careplan.reminders.support import COORDINATOR, PERFORMER, api_plan, enrol, stock
from tests.conftest import issue_test_token


@pytest.fixture
def planned(client):
    stock(client)
    patient = enrol(client)
    return {"patient": patient, "plan": api_plan(client, patient, target_date="2027-02-01")}


def bearer(app, role: str, client_id: str, organization: str | None = None) -> dict:
    """Return the Authorization header of a client registered once per test under client_id."""
    tokens = app.extensions.setdefault("tests.reminder_tokens", {})
    if client_id not in tokens:
        tokens[client_id] = issue_test_token(app, role=role, client_id=client_id, organization=organization)
    return {"Authorization": f"Bearer {tokens[client_id]}"}


def flat(body: dict) -> list[dict]:
    return [item for group in body["groups"] for item in group["items"]]


def test_reminders_are_grouped_by_tier_in_adoption_order(client, planned):
    response = client.get("/api/v1/reminders?status=scheduled")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [g["label"] for g in body["groups"]] == ["recommended", "promising", "emerging", "none"]
    assert {i["kind"] for i in body["groups"][-1]["items"]} == {"plan-review", "goal-review"}
    assert body["next"] is None


def test_pages_keep_the_tier_order_and_never_repeat(client, planned):
    seen, url = [], "/api/v1/reminders?limit=2"
    while url:
        body = client.get(url).get_json()
        seen += [(g["label"], i["id"]) for g in body["groups"] for i in g["items"]]
        url = body["next"]
    whole = [(g["label"], i["id"]) for g in client.get("/api/v1/reminders?limit=100").get_json()["groups"]
             for i in g["items"]]
    # 3 follow-ups, their 3 "still not done" and 3 escalations, a plan review, a goal review
    assert seen == whole and len(whole) == 11


def test_filters_by_tier_kind_recipient_and_due_window(client, planned):
    assert [i["kind"] for i in flat(client.get("/api/v1/reminders?tier=recommended").get_json())] == [
        "follow-up", "follow-up-escalation", "follow-up-overdue"]
    assert {i["kind"] for i in flat(client.get("/api/v1/reminders?tier=none").get_json())} == {
        "plan-review", "goal-review"}
    assert [i["kind"] for i in flat(client.get("/api/v1/reminders?kind=goal-review").get_json())] == ["goal-review"]
    assert [i["recipient"] for i in flat(client.get(f"/api/v1/reminders?recipient={PERFORMER}").get_json())] == [
        PERFORMER, PERFORMER]
    window = flat(client.get("/api/v1/reminders?due_from=2026-11-10T00:00:00Z&due_to=2026-11-12T23:59:59Z"
                             ).get_json())
    assert [i["tier"] for i in window] == ["promising"]
    assert flat(client.get("/api/v1/reminders?status=sent").get_json()) == []


@pytest.mark.parametrize("query", ["tier=gold", "status=lost", "recipient=Patient/1", "due_from=yesterday",
                                   "due_from=2026-11-10T00:00:00", "cursor=abc", "limit=0",
                                   "due_from=2026-12-01T00:00:00Z&due_to=2026-11-01T00:00:00Z"])
def test_bad_filters_answer_a_json_4xx(client, planned, query):
    response = client.get(f"/api/v1/reminders?{query}")
    assert response.status_code in (400, 422)
    assert response.get_json()["code"] == response.status_code


def test_coordinators_see_their_own_and_their_patients_reminders_partners_their_agencys(app, client, planned):
    mine = flat(client.get("/api/v1/reminders", headers=bearer(app, "coordinator", "coord-1")).get_json())
    # The peer worker's recommended follow-up is about a patient coord-1 coordinates: visible to them too.
    assert {i["recipient"] for i in mine} == {COORDINATOR, PERFORMER} and len(mine) == 11
    other = client.get("/api/v1/reminders", headers=bearer(app, "coordinator", "coord-2"))
    assert other.status_code == 200 and flat(other.get_json()) == []
    peer = flat(client.get("/api/v1/reminders", headers=bearer(app, "coordinator", "peer-1")).get_json())
    assert [(i["recipient"], i["kind"]) for i in peer] == [(PERFORMER, "follow-up"), (PERFORMER, "follow-up-overdue")]
    database = app.extensions["careplan.database"]
    with database.writing() as session:
        session.add(Reminder(key="referral-response|Task/t1|x", kind="referral-response", source="Task/t1",
                             recipient="Organization/harbour", patient=f"Patient/{planned['patient']}",
                             tier="promising", due_at=datetime(2026, 12, 1, tzinfo=timezone.utc), payload={}))
    partner = flat(client.get("/api/v1/reminders", headers=bearer(
        app, "partner", "harbour-app", organization="Organization/harbour")).get_json())
    assert [i["source"] for i in partner] == ["Task/t1"]


def _dead(app, count: int) -> list[int]:
    database = app.extensions["careplan.database"]
    moment = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with database.writing() as session:
        rows = [Delivery(channel="webhook", recipient=COORDINATOR, idempotency_key=f"reminder-{n}-webhook",
                         state="dead", attempts=12, next_attempt_at=moment, last_error="HTTP 503", payload={})
                for n in range(count)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def test_admins_list_and_requeue_dead_letters(app, client):
    ids = _dead(app, 3)
    body = client.get("/api/v1/deliveries?state=dead&limit=2").get_json()
    assert [d["id"] for d in body["items"]] == ids[:2] and body["next"]
    assert [d["id"] for d in client.get(body["next"]).get_json()["items"]] == ids[2:]
    response = client.post("/api/v1/deliveries/requeue", json={"ids": ids[:2]})
    assert response.status_code == 200, response.get_json()
    assert {(d["state"], d["attempts"]) for d in response.get_json()["items"]} == {("pending", 0)}
    assert [d["id"] for d in client.get("/api/v1/deliveries").get_json()["items"]] == ids[2:]
    again = client.post("/api/v1/deliveries/requeue", json={"ids": ids[:1]})
    assert again.status_code == 422 and "dead" in again.get_json()["message"]
    assert client.post("/api/v1/deliveries/requeue", json={"ids": [999999]}).status_code == 404
    assert client.post("/api/v1/deliveries/requeue", json={"ids": "all"}).status_code == 422
    assert client.post("/api/v1/deliveries/requeue", json={"ids": [2**70]}).status_code == 422


def test_only_admins_see_deliveries(app, client):
    _dead(app, 1)
    coordinator = bearer(app, "coordinator", "coord-1")
    assert client.get("/api/v1/deliveries", headers=coordinator).status_code == 403
    assert client.post("/api/v1/deliveries/requeue", json={"ids": [1]}, headers=coordinator).status_code == 403


def test_a_referral_made_through_the_api_or_fhir_gets_the_same_reminders(world):  # noqa: F811 - the fixture
    database = world.database
    task_id = world.refer()["id"]

    def rows(task: str) -> list[tuple]:
        return sorted((r.kind, r.recipient, r.tier, r.due_at, r.state, r.done_at is not None)
                      for r in _reminders(database, f"Task/{task}"))

    made = rows(task_id)
    assert [(kind, recipient, tier) for kind, recipient, tier, *_ in made] == [
        ("referral-escalation", world.coordinator.reference, "promising"),
        ("referral-response", HARBOUR, "promising")]
    copy = {k: v for k, v in world.fhir(f"Task/{task_id}").items() if k != "meta"} | {"id": "via-fhir"}
    response = world.coordinator.put_fhir(copy)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert rows("via-fhir") == made
    # The partner accepts: the response reminders are done and cancelled, the first-contact one is scheduled.
    assert world.act(HARBOUR, task_id, "accept").status_code == 200
    states = {kind: (state, done) for kind, _, _, _, state, done in rows(task_id)}
    assert states == {"referral-response": ("cancelled", True), "referral-escalation": ("cancelled", True),
                      "referral-contact": ("scheduled", False)}
    assert world.act(HARBOUR, task_id, "start").status_code == 200
    assert {kind: (state, done) for kind, _, _, _, state, done in rows(task_id)}["referral-contact"] == (
        "cancelled", True)
    # The partner sees its agency's referral reminders in its own listing.
    listed = flat(world.partners[HARBOUR].get("/api/v1/reminders").get_json())
    assert {i["source"] for i in listed} == {f"Task/{task_id}", "Task/via-fhir"}


def _reminders(database, source: str) -> list[Reminder]:
    from sqlalchemy import select

    with database.reading() as session:
        found = list(session.scalars(select(Reminder).where(Reminder.source == source)))
        session.expunge_all()
        return found
