"""FHIR update (including update-as-create) and conditional update interactions.

https://hl7.org/fhir/R4/http.html#update
https://hl7.org/fhir/R4/http.html#cond-update
"""

from flask import request

from api.database import get_db
from api.fhir.http import if_match, json_body, write_response
from careplan.errors import InvalidRequest
from careplan.store import service


def update(resource_type: str, resource_id: str):
    """Store the body as the next version of the resource, creating it with the client's id if new."""
    service.require_type(resource_type)
    body = json_body()
    result = service.update(get_db(), resource_type=resource_type, resource_id=resource_id, resource=body,
                            if_match=if_match())
    return write_response(result.stored, 201 if result.created else 200, location=result.created)


def conditional_update(resource_type: str):
    """Update the one resource matching the query, or create it when none matches."""
    service.require_type(resource_type)
    if not request.query_string:
        raise InvalidRequest("A PUT on a resource type needs search criteria, e.g. ?identifier=system|value")
    body = json_body()
    result = service.conditional_update(get_db(), resource_type=resource_type,
                                        criteria=request.query_string.decode("utf-8", "replace"),
                                        resource=body, if_match=if_match())
    return write_response(result.stored, 201 if result.created else 200, location=result.created)
