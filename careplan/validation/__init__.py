"""Validate FHIR resources: structure with fhir.resources R4B models, plus the bindings those models skip."""

from careplan.validation.resource import validate_resource

__all__ = ["validate_resource"]
