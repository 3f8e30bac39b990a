"""FHIR read interaction.

https://hl7.org/fhir/R4/http.html#read
"""

from api.database import get_db
from api.fhir.http import fhir_json, resource_headers
from careplan.store import service


def read(resource_type: str, resource_id: str):
    """Return the current version of a resource (410 when deleted)."""
    stored = service.read(get_db(), resource_type=resource_type, resource_id=resource_id)
    return fhir_json(stored.content, 200, resource_headers(stored))
