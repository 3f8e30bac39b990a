"""Code systems of closed-loop referrals (issue 6), as shipped in fhir/catalogue/ and used in Python.

Each mapping is code -> display; tests check it matches the CodeSystem JSON so the two cannot drift apart.
"""

from __future__ import annotations

BASE = "https://careplan.example.org/fhir"

ACTIVITY_ID_EXTENSION = f"{BASE}/StructureDefinition/activity-id"
TIMEZONE_EXTENSION = f"{BASE}/StructureDefinition/timezone"

OUTCOME_SYSTEM = f"{BASE}/CodeSystem/referral-outcome"
OUTCOMES = {
    "got-help": "Got help",
    "could-not-contact": "Could not contact the client",
    "not-eligible": "Not eligible",
    "no-capacity": "No capacity",
    "no-longer-interested": "No longer interested",
    "declined-by-client": "Declined by the client",
    "other": "Other outcome",
}

DECLINE_REASON_SYSTEM = f"{BASE}/CodeSystem/referral-decline-reason"
DECLINE_REASONS = {
    "not-eligible": "Client not eligible",
    "no-capacity": "No capacity (full or waitlist closed)",
    "service-not-offered": "Service not offered",
    "outside-service-area": "Outside the service area",
    "language-not-available": "Language not available",
    "client-declined": "Client declined the service",
    "duplicate": "Duplicate referral",
    "other": "Other reason",
}

BUSINESS_STATUS_SYSTEM = f"{BASE}/CodeSystem/referral-business-status"
BUSINESS_STATUSES = {
    "waitlisted": "Waitlisted",
    "trying-to-reach-client": "Trying to reach the client",
    "client-contacted": "Client contacted",
}

COMMUNICATION_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/referral-communication"
COMMUNICATION_CATEGORIES = {
    "referral-closed": "Referral closed",
    "referral-message": "Message about a referral",
}

# Task.output type (Gravity SDOHCC TaskForReferralManagement): what the partner did.
OUTPUT_TYPE_SYSTEM = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
OUTPUT_TYPE_CODE = "resulting-activity"


def outcome_output(code: str) -> dict:
    """Return a Task.output element recording a coded referral outcome."""
    return {"type": {"coding": [{"system": OUTPUT_TYPE_SYSTEM, "code": OUTPUT_TYPE_CODE}]},
            "valueCodeableConcept": {"coding": [{"system": OUTCOME_SYSTEM, "code": code,
                                                 "display": OUTCOMES[code]}]}}


def decline_reason(code: str, text: str | None = None) -> dict:
    """Return a Task.statusReason for a decline reason code, with optional free text."""
    concept: dict = {"coding": [{"system": DECLINE_REASON_SYSTEM, "code": code, "display": DECLINE_REASONS[code]}]}
    if text:
        concept["text"] = text
    return concept


def business_status(code: str) -> dict:
    """Return a Task.businessStatus for a partner sub-state code."""
    return {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": code, "display": BUSINESS_STATUSES[code]}]}
