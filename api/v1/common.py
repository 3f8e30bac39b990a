"""Shared pieces of the /api/v1 blueprints: safe text fields, cursor pagination, references, the role check."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import marshmallow as ma
from flask import request

from api.auth import current_principal
from careplan.errors import Forbidden

COORDINATION_ROLES = frozenset({"admin", "coordinator"})
REFERENCE = re.compile(r"^(Patient|Practitioner|PractitionerRole|RelatedPerson|Organization|CareTeam|"
                       r"HealthcareService)/[A-Za-z0-9\-.]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ERROR_RESPONSES = (400, 401, 403, 404, 422)


class Text(ma.fields.String):
    """A string without control characters (they would only ever be an attack or a mistake)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if _CONTROL.search(text):
            raise ma.ValidationError("Must not contain control characters.")
        return text


def text(*, required: bool = False, max_length: int = 1000, description: str, example=None, **kwargs) -> Text:
    """Return a documented Text field of at most max_length characters."""
    metadata = {"description": description}
    if example is not None:
        metadata["example"] = example
    return Text(required=required, validate=ma.validate.Length(min=1, max=max_length), metadata=metadata, **kwargs)


def reference(*, required: bool = False, description: str, example: str, **kwargs) -> Text:
    """Return a field holding a relative FHIR reference such as Practitioner/123."""
    return Text(required=required, validate=ma.validate.Regexp(REFERENCE, error="Not a reference like Type/id."),
                metadata={"description": description, "example": example}, **kwargs)


class PageArgs(ma.Schema):
    """Cursor pagination: an opaque cursor from a previous page's `next`, and a page size."""

    cursor = text(max_length=4000, description="Opaque cursor from the `next` link of the previous page")
    limit = ma.fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=100),
                              metadata={"description": "Items per page (1-100)", "example": 20})


def next_link(cursor: str | None) -> str | None:
    """Return the URL of the next page (the same query with the new cursor), or None on the last page."""
    if cursor is None:
        return None
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    return f"{request.path}?{urlencode([*args, ('cursor', cursor)])}"


def require_coordination_role() -> None:
    """Before each request of a coordinator blueprint: only coordinators and administrators may use it."""
    principal = current_principal()
    if principal is not None and principal.role not in COORDINATION_ROLES:
        raise Forbidden(f"The coordination API is for coordinators; a {principal.role} client may not use it")


def error_responses(blp, *codes: int):
    """Document the error responses of a view (ERROR_RESPONSES when no codes are given) with the error shape."""
    from api.v1.errors import ErrorSchema

    def decorate(view):
        for code in codes or ERROR_RESPONSES:
            view = blp.alt_response(code, schema=ErrorSchema, description="Error")(view)
        return view
    return decorate
