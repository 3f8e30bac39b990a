"""Turn every error under /fhir into an OperationOutcome, through one helper.

https://hl7.org/fhir/R4/operationoutcome.html
"""

from __future__ import annotations

import logging
import traceback

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from api.fhir.http import fhir_json
from careplan.errors import FhirError, Issue

log = logging.getLogger(__name__)

_HTTP_ISSUE_CODES = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 406: "not-supported",
    409: "conflict", 412: "conflict", 413: "too-long", 415: "not-supported", 422: "processing", 429: "throttled",
}


def error_response(error: FhirError):
    """Answer a FhirError with its status and OperationOutcome."""
    headers = {}
    record = getattr(error, "record", None)
    if record is not None:  # a deleted resource still has a version: tell the client which
        headers["ETag"] = record.etag
    return fhir_json(error.operation_outcome(), error.status, headers)


def _is_fhir_request() -> bool:
    return request.path == "/fhir" or request.path.startswith("/fhir/")


def init_app(app: Flask) -> None:
    """Register the error handlers that keep /fhir answering in OperationOutcomes."""

    @app.errorhandler(FhirError)
    def _fhir_error(error: FhirError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        if not _is_fhir_request():
            return error
        message = error.description or error.name
        if error.code == 404:
            message = f"Nothing is served at {request.path}"
        elif error.code == 405:
            message = f"{request.method} is not supported on {request.path}"
        elif error.code == 413:
            message = "The request body is larger than this server accepts"
        failure = FhirError(issues=[Issue(_HTTP_ISSUE_CODES.get(error.code, "processing"), message)])
        failure.status = error.code
        response = error_response(failure)
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        if isinstance(error, HTTPException):
            return _http_error(error)
        # Log the type and place only: the message may quote patient data.
        log.error("unhandled %s on %s %s\n%s", type(error).__name__, request.method, request.url_rule,
                  "".join(traceback.format_tb(error.__traceback__)))
        if not _is_fhir_request():
            return {"code": 500, "status": "Internal Server Error", "message": "An unexpected error occurred"}, 500
        failure = FhirError(issues=[Issue("exception", "An unexpected error occurred; it has been logged")])
        failure.status = 500
        return error_response(failure)
