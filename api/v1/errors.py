"""One JSON error shape for every /api/v1 error: {"code", "status", "message", "errors"}.

``errors`` holds field-level messages (``{"json": {"birth_date": ["Not a valid date."]}}``) when there are any.
Authentication refusals (api.auth) answer the same shape plus the OAuth ``error`` code. Errors elsewhere keep the
handlers registered before (OperationOutcomes under /fhir).
"""

from __future__ import annotations

import logging
import traceback

import marshmallow as ma
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from careplan.coordination.errors import CoordinationError
from careplan.errors import FhirError

log = logging.getLogger(__name__)
PREFIX = "/api/v1"


class ErrorSchema(ma.Schema):
    """The error body of every /api/v1 error."""

    code = ma.fields.Integer(required=True, metadata={"description": "HTTP status code", "example": 422})
    status = ma.fields.String(required=True, metadata={"description": "HTTP status name",
                                                       "example": "Unprocessable Entity"})
    message = ma.fields.String(metadata={"description": "What went wrong, for people",
                                         "example": "The request has invalid fields"})
    errors = ma.fields.Dict(metadata={"description": "Field-level messages by location (json, query) and field",
                                      "example": {"json": {"birth_date": ["Not a valid date."]}}})
    error = ma.fields.String(metadata={"description": "OAuth error code on 401/403 from authentication",
                                       "example": "invalid_token"})


def is_api_request() -> bool:
    """Tell whether the request is under /api/v1."""
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def error_response(status: int, message: str, errors: dict | None = None, headers: dict | None = None):
    """Answer an error in the one JSON shape."""
    body: dict = {"code": status, "status": HTTP_STATUS_CODES.get(status, "Error"), "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def init_app(app: Flask) -> None:
    """Register handlers that answer /api/v1 errors in the JSON shape and delegate everything else."""
    registered = app.error_handler_spec[None][None]
    previous_http = registered.get(HTTPException)
    previous_fhir = registered.get(FhirError)
    previous_any = registered.get(Exception)

    def on_http(error: HTTPException):
        if not is_api_request():
            return previous_http(error) if previous_http else error
        data = getattr(error, "data", None) or {}
        errors = data.get("errors") or data.get("messages")
        message = data.get("message") or (
            "The request has invalid fields" if errors else
            f"Nothing is served at {request.path}" if error.code == 404 else
            f"{request.method} is not supported on {request.path}" if error.code == 405 else
            error.description or error.name)
        response = error_response(error.code or 500, message, errors, data.get("headers"))
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    def on_fhir(error: FhirError):
        if not is_api_request():
            return previous_fhir(error) if previous_fhir else error
        return error_response(error.status, "; ".join(i.diagnostics for i in error.issues))

    def on_coordination(error: CoordinationError):
        return error_response(error.status, error.message, {error.location: error.errors} if error.errors else None)

    def on_any(error: Exception):
        if isinstance(error, HTTPException):
            return on_http(error)
        if not is_api_request():
            if previous_any:
                return previous_any(error)
            raise error
        # The type and place only: the message may quote patient data.
        log.error("unhandled %s on %s %s\n%s", type(error).__name__, request.method, request.url_rule,
                  "".join(traceback.format_tb(error.__traceback__)))
        return error_response(500, "An unexpected error occurred; it has been logged")

    app.register_error_handler(HTTPException, on_http)
    app.register_error_handler(FhirError, on_fhir)
    app.register_error_handler(CoordinationError, on_coordination)
    app.register_error_handler(Exception, on_any)
