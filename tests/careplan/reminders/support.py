"""Helpers of the reminder tests: practices, a coordinated plan over /api/v1 and /fhir, the reminder rows."""

from __future__ import annotations

import json

from sqlalchemy import select

from careplan.reminders.models import Reminder
from tests.api.v1.conftest import store_practice

COORDINATOR = "Practitioner/coord-1"
PERFORMER = "Practitioner/peer-1"


def stock(client) -> dict:
    """Store three practices, one per tier, with cadences of 7, 14 and 21 days; return them by tier."""
    return {tier: store_practice(client, name, tier, cadence_days=days) for tier, name, days in (
        ("emerging", "community-navigation", 7), ("recommended", "peer-support", 14),
        ("promising", "housing-first", 21))}


def enrol(client, family: str = "Tremblay") -> str:
    """Enrol a patient through /api/v1 and return its id."""
    response = client.post("/api/v1/patients", json={
        "family": family, "given": ["Zoë"], "birth_date": "1988-04-02",
        "identification": {"identified_by": "ED social worker", "identified_on": "2026-11-20",
                           "reason": "Three ED visits in 60 days"}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["patient"]["id"]


def api_plan(client, patient_id: str, *, start: str = "2026-11-02", status: str = "active",
             target_date: str | None = None) -> dict:
    """Create an active coordinated plan through /api/v1 and return the stored CarePlan."""
    body = {"title": "Stable housing", "status": status, "period_start": start,
            "practices": [{"practice": "community-navigation"},
                          {"practice": "peer-support", "performer": PERFORMER},
                          {"practice": "housing-first", "cadence_days": 10}],
            "team": [{"role": "coordinator", "member": COORDINATOR}],
            "concerns": [{"description": "No stable housing"}]}
    if target_date:
        body["goals"] = [{"description": "Own place", "target_date": target_date}]
    response = client.post(f"/api/v1/patients/{patient_id}/care-plans", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["resource"]


def fhir_put(client, resource: dict):
    """PUT a resource through /fhir and return the response."""
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                      content_type="application/fhir+json")


def fhir_get(client, reference: str) -> dict:
    """Return the current version of a resource through /fhir."""
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def without_meta(resource: dict) -> dict:
    """Return resource without its server-written meta (for a PUT of a copy)."""
    return {k: v for k, v in resource.items() if k != "meta"} | {"meta": {"profile": resource["meta"]["profile"]}}


def reminders(database, **filters) -> list[Reminder]:
    """Return the reminder rows matching column filters, ordered by key."""
    with database.reading() as session:
        statement = select(Reminder).order_by(Reminder.key)
        for name, value in filters.items():
            statement = statement.where(getattr(Reminder, name) == value)
        rows = list(session.scalars(statement))
        session.expunge_all()  # detached, loaded: readable after the read transaction ends
        return rows


def shape(rows: list[Reminder], *, plan_id: str, patient: str) -> list[tuple]:
    """Return what a set of reminders means, independent of the plan's id and patient."""
    return sorted((r.kind, r.key.replace(plan_id, "<plan>"), r.recipient, r.tier, r.due_at.isoformat(), r.state,
                   r.done_at.isoformat() if r.done_at else None, r.patient == patient) for r in rows)
