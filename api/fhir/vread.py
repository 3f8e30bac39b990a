"""FHIR vread interaction.

https://hl7.org/fhir/R4/http.html#vread
"""

from api.database import get_db
from api.fhir.http import fhir_json, resource_headers
from careplan.store import service


def vread(resource_type: str, resource_id: str, version_id: str):
    """Return one version of a resource (410 when that version records the deletion)."""
    stored = service.vread(get_db(), resource_type=resource_type, resource_id=resource_id, version_id=version_id)
    return fhir_json(stored.content, 200, resource_headers(stored))
