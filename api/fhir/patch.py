"""FHIR patch interaction (JSON Patch).

https://hl7.org/fhir/R4/http.html#patch
"""

from api.database import get_db
from api.fhir.http import JSON_PATCH, if_match, json_body, write_response
from careplan.store import service


def patch(resource_type: str, resource_id: str):
    """Apply a JSON Patch (application/json-patch+json) to the current version."""
    service.require_type(resource_type)
    operations = json_body(allowed={JSON_PATCH})
    result = service.patch(get_db(), resource_type=resource_type, resource_id=resource_id, operations=operations,
                           if_match=if_match())
    return write_response(result.stored, 200, location=False)
