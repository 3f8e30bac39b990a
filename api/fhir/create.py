"""FHIR create and conditional create interactions.

https://hl7.org/fhir/R4/http.html#create
https://hl7.org/fhir/R4/http.html#ccreate
"""

from flask import request

from api.database import get_db
from api.fhir.http import json_body, write_response
from careplan.store import service


def create(resource_type: str):
    """Create a resource with a server id; with If-None-Exist, only when no resource matches."""
    service.require_type(resource_type)
    body = json_body()
    result = service.create(get_db(), resource=body, resource_type=resource_type,
                            if_none_exist=request.headers.get("If-None-Exist"))
    if not result.created:
        # One match: the server ignores the request and answers 200 with the existing resource.
        return write_response(result.stored, 200, location=False)
    return write_response(result.stored, 201, location=True)
