"""A curator's tier change moves the practice's waiting reminders to the new tier's policy in the same transaction."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.careplan.reminders.support import api_plan, enrol, reminders, stock


def test_a_tier_change_moves_the_waiting_reminders_of_the_practice(client, database):
    stock(client)
    start = (datetime.now(timezone.utc) - timedelta(days=3)).date()
    plan = api_plan(client, enrol(client), start=start.isoformat())
    activity = plan["activity"][0]["id"]  # community-navigation: emerging, every 7 days
    source = f"CarePlan/{plan['id']}#{activity}"

    def rows():
        return {r.kind: r for r in reminders(database, source=source) if r.state == "scheduled"}

    before = rows()
    assert {r.tier for r in before.values()} == {"emerging"}
    assert before["follow-up-escalation"].payload["misses"] == 3  # emerging: escalated after 3 misses

    response = client.patch("/api/v1/practices/community-navigation", headers={"If-Match": 'W/"1"'},
                            json={"tier": "recommended"})
    assert response.status_code == 200, response.get_json()
    after = rows()
    assert {r.tier for r in after.values()} == {"recommended"}
    # Recommended follow-ups go out 2 days ahead (emerging: on the day), and escalate after the first miss.
    assert after["follow-up"].key == before["follow-up"].key
    assert after["follow-up"].due_at == before["follow-up"].due_at - timedelta(days=2)
    assert after["follow-up-escalation"].payload["misses"] == 1
    # The other practices' reminders are untouched.
    other = [r for r in reminders(database) if r.source.startswith(f"CarePlan/{plan['id']}#")
             and r.source != source and r.state == "scheduled"]
    assert other and {r.tier for r in other} == {"recommended", "promising"}
