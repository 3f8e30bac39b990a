"""FHIR delete and conditional delete interactions.

https://hl7.org/fhir/R4/http.html#delete
https://hl7.org/fhir/R4/http.html#3.1.0.7.1
"""

from flask import Response, request

from api.database import get_db
from api.fhir.http import if_match
from careplan.errors import InvalidRequest
from careplan.store import service


def delete(resource_type: str, resource_id: str):
    """Delete a resource; answering 204 also when it was already deleted."""
    stored = service.delete(get_db(), resource_type=resource_type, resource_id=resource_id, if_match=if_match())
    return _no_content(stored)


def conditional_delete(resource_type: str):
    """Delete the one resource matching the query (412 when several match)."""
    service.require_type(resource_type)
    if not request.query_string:
        raise InvalidRequest("A DELETE on a resource type needs search criteria, e.g. ?identifier=system|value")
    stored = service.conditional_delete(get_db(), resource_type=resource_type,
                                        criteria=request.query_string.decode("utf-8", "replace"))
    return _no_content(stored)


def _no_content(stored) -> Response:
    response = Response(status=204)
    if stored is not None:
        response.headers["ETag"] = stored.etag
    return response
