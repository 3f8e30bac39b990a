"""From a plan written through the API to the coordinator's inbox, through the scheduler's tick and the renderer."""

from __future__ import annotations

from datetime import datetime, timezone

from scheduler.channels import InboxChannel
from scheduler.worker import tick
from tests.api.v1.test_reminders import bearer
from tests.careplan.reminders.support import api_plan, enrol, reminders, stock


def test_due_reminders_and_the_digest_reach_the_inbox_without_names(app, client, database):
    stock(client)
    patient = enrol(client, "Gagnon")
    api_plan(client, patient, start="2026-11-02")
    now = datetime(2026, 11, 20, 13, tzinfo=timezone.utc)
    tick(database, now=now, channels={"inbox": InboxChannel(database)})
    tick(database, now=now, channels={"inbox": InboxChannel(database)})  # a second tick sends nothing twice
    sent = {r.kind for r in reminders(database, recipient="Practitioner/coord-1", state="sent")}
    assert sent == {"follow-up", "follow-up-escalation", "digest"}
    inbox = client.get("/api/v1/inbox?limit=100", headers=bearer(app, "coordinator", "coord-1")).get_json()["items"]
    texts = [m["text"] for m in inbox]
    # Two follow-ups (promising, emerging), the escalation of the peer worker's missed one (recommended, due 11-16)
    # and the digest.
    assert len(inbox) == 4
    assert not any("Gagnon" in (t or "") or "Zoë" in (t or "") for t in texts)
    (digest,) = [t for t in texts if t.startswith("Daily summary")]
    assert digest.index("Promising") < digest.index("Emerging")
    assert all(m["subject"] in (None, f"Patient/{patient}") for m in inbox)
