"""The FHIR resource types this server stores; adding a type is one line here."""

SUPPORTED_TYPES: tuple[str, ...] = (
    "ActivityDefinition",
    "AuditEvent",
    "CarePlan",
    "CareTeam",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "Condition",
    "Consent",
    "Encounter",
    "EpisodeOfCare",
    "Goal",
    "HealthcareService",
    "Location",
    "Measure",
    "MeasureReport",
    "Observation",
    "Organization",
    "Patient",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "ServiceRequest",
    "StructureDefinition",
    "Task",
    "ValueSet",
)

# Written by the server itself (the audit trail); clients may read but never write them.
SERVER_WRITTEN_TYPES: frozenset[str] = frozenset({"AuditEvent"})


# What a search naming no type covers (system search, compartment "*", $everything): the audit trail is only read by
# asking for it, so it never floods a sync or a patient summary.
WIDE_SEARCH_TYPES: tuple[str, ...] = tuple(t for t in SUPPORTED_TYPES if t not in SERVER_WRITTEN_TYPES)


def is_supported(resource_type: str) -> bool:
    """Tell whether resource_type is stored by this server."""
    return resource_type in _SUPPORTED


_SUPPORTED = frozenset(SUPPORTED_TYPES)
