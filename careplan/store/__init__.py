"""The versioned FHIR resource store: every version kept, soft deletes, search index written with each version."""
