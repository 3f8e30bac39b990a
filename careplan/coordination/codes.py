"""The URLs and codes the coordination services write (shared contract of issue 5)."""

from __future__ import annotations

BASE = "https://careplan.example.org/fhir"
CARE_PLAN_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/care-plan-category"
COORDINATED_CARE_PLAN = "coordinated-care-plan"
CARE_PLAN_PROFILE = f"{BASE}/StructureDefinition/coordinated-care-plan"
CARE_TEAM_ROLE_SYSTEM = f"{BASE}/CodeSystem/care-team-role"
CARE_TEAM_ROLES = ("patient", "coordinator", "trusted-support-person", "provider", "partner-agency")
PRACTICE_URL_PREFIX = f"{BASE}/PlanDefinition/"
TIER_EXTENSION = f"{BASE}/StructureDefinition/practice-tier"
CADENCE_EXTENSION = f"{BASE}/StructureDefinition/practice-follow-up-cadence"
# Not in the shared contract: how an enrolment is recorded (read by the measures work).
EPISODE_TYPE_SYSTEM = f"{BASE}/CodeSystem/episode-of-care-type"
EPISODE_TYPE_CODE = "coordinated-care"
IDENTIFICATION_EXTENSION = f"{BASE}/StructureDefinition/coordinated-care-identification"
HEALTH_CONCERN = ("http://hl7.org/fhir/us/core/CodeSystem/condition-category", "health-concern")
SOCIAL_NEED_SYSTEM = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
