"""Realistic FHIR resources for tests, built fresh for each call."""

from __future__ import annotations

import copy

FHIR_JSON = "application/fhir+json"

_PATIENT = {
    "resourceType": "Patient",
    "extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
        "valueAddress": {"city": "Montréal", "country": "CA"},
    }],
    "identifier": [{"system": "https://careplan.example.org/mrn", "value": "MRN-1001"}],
    "active": True,
    "name": [{"use": "official", "family": "Ångström", "given": ["Zoë", "Léa"]}],
    "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "mobile"}],
    "gender": "female",
    "birthDate": "1988-04-12",
    "_birthDate": {"extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
        "valueDateTime": "1988-04-12T06:30:00+02:00",
    }]},
    "address": [{"line": ["12 Rue Sainte-Catherine"], "city": "Montréal", "postalCode": "H2X 1Y4", "country": "CA"}],
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-CA"}]}, "preferred": True}],
}

_CAREPLAN = {
    "resourceType": "CarePlan",
    "contained": [{"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active",
                   "description": {"text": "Sleep through the night"}, "subject": {"reference": "Patient/p1"}}],
    "extension": [{"url": "https://careplan.example.org/fhir/StructureDefinition/review-interval",
                   "valueDuration": {"value": 14.0, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}}],
    "status": "active",
    "intent": "plan",
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000", "display": "Care plan"}]}],
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2026-10-01T09:00:00-04:00", "end": "2027-04-01"},
    "goal": [{"reference": "#g1"}],
    "activity": [{
        "detail": {
            "kind": "ServiceRequest",
            "code": {"text": "Peer support check-in"},
            "status": "scheduled",
            "scheduledTiming": {"repeat": {"frequency": 1, "period": 1.50, "periodUnit": "wk"}},
            "description": "Weekly peer support",
        },
        "progress": [{"time": "2026-10-08T10:15:30.250+02:00", "text": "First meeting went well"}],
    }],
}

_OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6", "display": "PHQ-9 total score"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2026-10-02T14:00:00+05:30",
    "valueQuantity": {"value": 1.50, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
}


def patient(**overrides) -> dict:
    """Return a Patient with extensions, a primitive extension, accents and a timezone offset."""
    return {**copy.deepcopy(_PATIENT), **overrides}


def careplan(**overrides) -> dict:
    """Return a CarePlan with a contained Goal, an extension, decimals and offsets."""
    return {**copy.deepcopy(_CAREPLAN), **overrides}


def observation(**overrides) -> dict:
    """Return an Observation whose value is a decimal with a trailing zero."""
    return {**copy.deepcopy(_OBSERVATION), **overrides}


def strip_server_fields(resource: dict) -> dict:
    """Return resource without the fields the server owns (id, meta.versionId, meta.lastUpdated)."""
    result = {k: v for k, v in resource.items() if k != "id"}
    meta = {k: v for k, v in result.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        result["meta"] = meta
    return result


# -- referrals (issue 6) ------------------------------------------------------------------------------------------

SERVICE_CATEGORY_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/service-category"
ACCEPTING_REFERRALS = "https://careplan.example.org/fhir/StructureDefinition/accepting-referrals"
CONSENT_SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                             "code": "patient-privacy"}]}


def partner_organization(organization_id: str, name: str, *, timezone: str | None = None) -> dict:
    """Return a partner agency Organization (optionally with its IANA time zone extension)."""
    resource = {"resourceType": "Organization", "id": organization_id, "active": True, "name": name}
    if timezone:
        resource["extension"] = [{"url": "https://careplan.example.org/fhir/StructureDefinition/timezone",
                                  "valueCode": timezone}]
    return resource


def partner_service(service_id: str, organization_id: str, *, needs: tuple[str, ...] = ("housing",),
                    languages: tuple[str, ...] = ("en", "fr"), accepting: bool | None = True) -> dict:
    """Return a HealthcareService of the partner directory offering needs in languages."""
    resource = {"resourceType": "HealthcareService", "id": service_id, "active": True,
                "name": service_id.replace("-", " ").title(),
                "providedBy": {"reference": f"Organization/{organization_id}"},
                "category": [{"coding": [{"system": SERVICE_CATEGORY_SYSTEM, "code": need}]} for need in needs],
                "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": c}]} for c in languages]}
    if accepting is not None:
        resource["extension"] = [{"url": ACCEPTING_REFERRALS, "valueBoolean": accepting}]
    return resource


def disclosure_consent(consent_id: str, patient_id: str, organization: str, *, labels: tuple[str, ...] = (),
                       status: str = "active") -> dict:
    """Return a patient-privacy Consent permitting disclosure to organization (and of data with labels)."""
    provision: dict = {"type": "permit", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP"}]},
        "reference": {"reference": organization}}]}
    if labels:
        provision["securityLabel"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code}
                                      for code in labels]
    return {"resourceType": "Consent", "id": consent_id, "status": status, "scope": copy.deepcopy(CONSENT_SCOPE),
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "provision": provision}


def referral_request(care_plan_id: str, activity_id: str, partner: str, **overrides) -> dict:
    """Return the body of POST /api/v1/referrals for a housing referral from a care plan activity."""
    return {"care_plan": care_plan_id, "activity": activity_id, "partner": partner,
            "need": {"code": "housing", "display": "Housing"}, "reason": "Sleeping rough since October",
            "priority": "urgent", **overrides}
