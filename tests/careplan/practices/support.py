"""Coordinated care plans and the practice catalogue for tests."""

from __future__ import annotations

import copy

from careplan.db import Database
from careplan.practices import catalogue
from careplan.practices.profiles import CATEGORY_CODE, CATEGORY_SYSTEM, PROFILE_URL
from careplan.store import service

BASE = "https://careplan.example.org/fhir"
PRACTICE = f"{BASE}/PlanDefinition/"


def load_catalogue(database: Database) -> list[dict]:
    """Store every catalogue resource under its own id (as `careplan seed` does) and return them."""
    resources = catalogue.load_files()
    with database.writing() as session:
        for resource in resources:
            service.update_in(session, resource=resource, resource_id=resource["id"])
    return resources


def activity(practice: str, *, performer: str = "Practitioner/coordinator", every_days: int = 14) -> dict:
    """Return a care plan activity tied to the catalogue practice with id practice."""
    return {
        "detail": {
            "instantiatesCanonical": [PRACTICE + practice],
            "code": {"text": practice.replace("-", " ")},
            "status": "scheduled",
            "scheduledTiming": {"repeat": {"frequency": 1, "period": every_days, "periodUnit": "d"}},
            "performer": [{"reference": performer}],
            "description": "Follow up with the patient",
        },
        "progress": [{"time": "2026-11-02T10:00:00-05:00", "text": "Talked it through with the patient"}],
    }


_PLAN = {
    "resourceType": "CarePlan",
    "meta": {"profile": [PROFILE_URL]},
    "status": "active",
    "intent": "plan",
    "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORY_CODE}]}],
    "title": "Coordinated care plan",
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2026-11-01"},
    "author": {"reference": "Practitioner/coordinator"},
    "careTeam": [{"reference": "CareTeam/team-1"}],
    "addresses": [{"reference": "Condition/housing-need"}],
    "goal": [{"reference": "Goal/own-place"}],
    "activity": [activity("warm-handoff-closed-loop-referral", performer="Organization/housing-partner", every_days=7),
                 activity("single-point-of-contact"),
                 activity("collaborate-in-hospital-on-care-plan")],
}


def coordinated_plan(**overrides) -> dict:
    """Return a CarePlan that keeps every rule of the coordinated care plan profile (for Patient/p1)."""
    return {**copy.deepcopy(_PLAN), **overrides}
