"""GET /api/v1/inbox and marking messages read or done: only the recipient's messages, only by the recipient."""

from __future__ import annotations

import pytest

from careplan.store import service
from tests.api.v1.test_reminders import bearer

HARBOUR = "Organization/harbour"


def message(recipient: str, text: str, identifier: str) -> dict:
    return {"resourceType": "Communication", "status": "completed",
            "identifier": [{"system": "https://careplan.example.org/fhir/delivery", "value": identifier}],
            "category": [{"coding": [{"system": "https://careplan.example.org/fhir/CodeSystem/communication-category",
                                      "code": "reminder"}]}],
            "recipient": [{"reference": recipient}], "sent": "2026-11-20T12:30:00Z",
            "payload": [{"contentString": text}]}


@pytest.fixture
def messages(app):
    database = app.extensions["careplan.database"]
    ids = {}
    with database.writing() as session:  # as the scheduler's inbox channel does: trusted system work
        for name, recipient in (("coord", "Practitioner/coord-1"), ("other", "Practitioner/coord-2"),
                                ("partner", HARBOUR), ("partner-2", "Organization/elsewhere")):
            ids[name] = service.create_in(session, resource=message(recipient, f"Follow-up due ({name})",
                                                                    f"reminder-{name}-inbox")).stored.id
    return ids


def test_each_caller_sees_only_messages_addressed_to_them(app, client, messages):
    coordinator = client.get("/api/v1/inbox", headers=bearer(app, "coordinator", "coord-1"))
    assert coordinator.status_code == 200, coordinator.get_json()
    assert [m["id"] for m in coordinator.get_json()["items"]] == [messages["coord"]]
    item = coordinator.get_json()["items"][0]
    assert item["text"] == "Follow-up due (coord)" and item["category"] == ["reminder"] and item["read_at"] is None
    partner = client.get("/api/v1/inbox", headers=bearer(app, "partner", "harbour-app", organization=HARBOUR))
    assert partner.status_code == 200, partner.get_json()
    assert [m["id"] for m in partner.get_json()["items"]] == [messages["partner"]]


def test_the_recipient_marks_a_message_read_then_done_through_the_store(app, client, messages):
    headers = bearer(app, "coordinator", "coord-1")
    read = client.post(f"/api/v1/inbox/{messages['coord']}/read", headers=headers)
    assert read.status_code == 200, read.get_json()
    assert read.get_json()["read_at"] and read.get_json()["done_at"] is None
    done = client.post(f"/api/v1/inbox/{messages['coord']}/done", headers=headers)
    assert done.get_json()["done_at"] and done.get_json()["read_at"] == read.get_json()["read_at"]
    # Recorded on the Communication itself, as a new version in the store.
    stored = client.get(f"/fhir/Communication/{messages['coord']}").get_json()
    assert stored["meta"]["versionId"] == "3"
    assert client.post(f"/api/v1/inbox/{messages['coord']}/done", headers=headers).get_json()[
        "resource"]["meta"]["versionId"] == "3"  # marking again changes nothing


def test_a_partner_marks_its_agencys_message(app, client, messages):
    headers = bearer(app, "partner", "harbour-app", organization=HARBOUR)
    response = client.post(f"/api/v1/inbox/{messages['partner']}/done", headers=headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["done_at"]


def test_nobody_else_may_mark_a_message(app, client, messages):
    other = client.post(f"/api/v1/inbox/{messages['coord']}/read", headers=bearer(app, "coordinator", "coord-2"))
    assert other.status_code == 403 and other.get_json()["code"] == 403
    partner = client.post(f"/api/v1/inbox/{messages['coord']}/read",
                          headers=bearer(app, "partner", "harbour-app", organization=HARBOUR))
    assert partner.status_code == 404  # a partner cannot even see a coordinator's message
    elsewhere = client.post(f"/api/v1/inbox/{messages['partner-2']}/read",
                            headers=bearer(app, "partner", "harbour-app", organization=HARBOUR))
    assert elsewhere.status_code == 404
    assert client.post("/api/v1/inbox/no-such-message/read", headers=bearer(app, "coordinator", "coord-1")
                       ).status_code == 404
    assert client.get(f"/fhir/Communication/{messages['coord']}").get_json()["meta"]["versionId"] == "1"
