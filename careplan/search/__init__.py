"""FHIR search: the search parameter registry and the index values extracted from resources."""
