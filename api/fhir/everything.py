"""Patient $everything: the patient and every resource in its compartment, paged like a search.

https://hl7.org/fhir/R4/patient-operation-everything.html
https://hl7.org/fhir/R4/compartmentdefinition-patient.html

Reads `_since` (only resources changed since then), `_type` (only these types) and `_count`; the pages use the
same stable keyset cursors as searches. Resources the compartment members merely reference (practitioners,
organizations) are not added.
"""

from __future__ import annotations

from flask import request

from api.database import get_db, get_settings
from api.fhir.search import caller_visibility, run, strict_handling
from careplan.errors import NotFound
from careplan.search import engine
from careplan.search.request import Compartment, parse_request


def everything(resource_type: str, resource_id: str):
    """Return Patient/{id} and everything in its compartment as a searchset Bundle."""
    if resource_type != "Patient":
        raise NotFound(f"$everything is only defined on Patient here, not on {resource_type}")
    with get_db().reading() as session:
        if engine.compartment_owner(session, resource_id, visibility=caller_visibility()) is None:
            raise NotFound(f"Patient/{resource_id} is not known")
    settings = get_settings()
    parsed = parse_request(list(request.args.items(multi=True)), types=None, strict=strict_handling(),
                           default_count=settings.default_page_size, max_count=settings.max_page_size,
                           compartment=Compartment(resource_id, everything=True))
    return run(f"/Patient/{resource_id}/$everything", parsed)
