"""GET/PUT /api/v1/notification-settings and its channels: own settings only, secrets shown once."""

from __future__ import annotations

from datetime import datetime, timezone

from tests.api.v1.test_reminders import bearer
from tests.careplan.reminders.support import api_plan, enrol, reminders, stock


def test_defaults_then_own_settings_for_a_coordinator(app, client):
    headers = bearer(app, "coordinator", "coord-1")
    current = client.get("/api/v1/notification-settings", headers=headers)
    assert current.status_code == 200, current.get_json()
    assert current.get_json() == {"recipient": "Practitioner/coord-1", "timezone": "America/Toronto",
                                  "quiet_start": None, "quiet_end": None, "digest_time": "07:30", "channels": []}
    changed = client.put("/api/v1/notification-settings", headers=headers, json={
        "timezone": "America/Vancouver", "quiet_start": "21:00", "quiet_end": "08:00", "digest_time": "06:45"})
    assert changed.status_code == 200, changed.get_json()
    assert client.get("/api/v1/notification-settings", headers=headers).get_json()["timezone"] == "America/Vancouver"
    assert client.get("/api/v1/notification-settings", headers=bearer(app, "coordinator", "coord-2")
                      ).get_json()["timezone"] == "America/Toronto"


def test_a_partner_sets_its_agencys_settings(app, client):
    headers = bearer(app, "partner", "harbour-app", organization="Organization/harbour")
    response = client.put("/api/v1/notification-settings", headers=headers, json={"timezone": "America/Halifax"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["recipient"] == "Organization/harbour"


def test_bad_settings_answer_422_with_the_field(app, client):
    headers = bearer(app, "coordinator", "coord-1")
    for body, field in (({"timezone": "Mars/Olympus"}, "timezone"), ({"timezone": "UTC", "quiet_start": "22:00"},
                                                                     "quiet_end"),
                        ({"timezone": "UTC", "digest_time": "7:30"}, "digest_time"), ({}, "timezone")):
        response = client.put("/api/v1/notification-settings", headers=headers, json=body)
        assert response.status_code == 422, (body, response.get_json())
        assert field in str(response.get_json()["errors"])


def test_the_settings_shape_new_reminders(app, client, database):
    stock(client)
    headers = bearer(app, "coordinator", "peer-1")
    client.put("/api/v1/notification-settings", headers=headers, json={
        "timezone": "Europe/Paris", "quiet_start": "08:00", "quiet_end": "10:00"})
    api_plan(client, enrol(client), start="2026-11-02")
    (row,) = reminders(database, kind="follow-up", recipient="Practitioner/peer-1")
    assert row.due_at == datetime(2026, 11, 14, 9, tzinfo=timezone.utc)  # 09:00 Paris is quiet until 10:00


def test_changing_the_time_zone_moves_scheduled_reminders(app, client, database):
    stock(client)
    api_plan(client, enrol(client), start="2026-11-02")
    (before,) = reminders(database, kind="follow-up", recipient="Practitioner/peer-1")
    assert before.due_at == datetime(2026, 11, 14, 14, tzinfo=timezone.utc)  # 09:00 Toronto
    response = client.put("/api/v1/notification-settings", headers=bearer(app, "coordinator", "peer-1"),
                          json={"timezone": "America/Vancouver"})
    assert response.status_code == 200, response.get_json()
    (after,) = reminders(database, kind="follow-up", recipient="Practitioner/peer-1")
    assert (after.id, after.due_at) == (before.id, datetime(2026, 11, 14, 17, tzinfo=timezone.utc))  # 09:00 PST


def test_a_webhook_secret_is_shown_once_and_channels_are_removed_by_their_owner(app, client):
    headers = bearer(app, "coordinator", "coord-1")
    created = client.post("/api/v1/notification-settings/channels", headers=headers,
                          json={"channel": "webhook", "address": "https://hooks.example.org/careplan"})
    assert created.status_code == 201, created.get_json()
    assert len(created.get_json()["secret"]) >= 32
    email = client.post("/api/v1/notification-settings/channels", headers=headers,
                        json={"channel": "email", "address": "coord@example.org"})
    assert email.status_code == 201 and "secret" not in email.get_json()
    listed = client.get("/api/v1/notification-settings", headers=headers).get_json()["channels"]
    assert [c["channel"] for c in listed] == ["webhook", "email"] and all("secret" not in c for c in listed)
    channel_id = created.get_json()["id"]
    other = client.delete(f"/api/v1/notification-settings/channels/{channel_id}",
                          headers=bearer(app, "coordinator", "coord-2"))
    assert other.status_code == 404
    assert client.delete(f"/api/v1/notification-settings/channels/{2**70}", headers=headers).status_code == 404
    removed = client.delete(f"/api/v1/notification-settings/channels/{channel_id}", headers=headers)
    assert removed.status_code == 200 and [c["channel"] for c in removed.get_json()["channels"]] == ["email"]
    assert [c["channel"] for c in client.get("/api/v1/notification-settings", headers=headers).get_json()[
        "channels"]] == ["email"]


def test_bad_channels_answer_422(app, client):
    headers = bearer(app, "coordinator", "coord-1")
    for body in ({"channel": "webhook", "address": "ftp://x.example.org"}, {"channel": "email", "address": "nope"},
                 {"channel": "sms", "address": "+15550100"}, {"channel": "webhook"}):
        response = client.post("/api/v1/notification-settings/channels", headers=headers, json=body)
        assert response.status_code == 422, (body, response.get_json())
