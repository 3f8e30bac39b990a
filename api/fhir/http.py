"""HTTP plumbing shared by the FHIR interactions: content negotiation, bodies, headers, Prefer, links.

https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlencode

from flask import Response, request

from api.database import get_settings
from careplan import jsonutil
from careplan.errors import (
    InvalidRequest,
    NotAcceptable,
    PreconditionFailed,
    UnsupportedMediaType,
)
from careplan.store.records import StoredResource, format_instant

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}
_FORMAT_ALIASES = {"json": FHIR_JSON, "application/json": FHIR_JSON, FHIR_JSON: FHIR_JSON,
                   "application/json+fhir": FHIR_JSON}
_XML_FORMATS = {"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"}
_ETAG = re.compile(r'^\s*(?:W/)?"(\d+)"\s*$')


def base_url() -> str:
    """Return the absolute base URL of the FHIR endpoint, without a trailing slash."""
    configured = get_settings().base_url
    if configured:
        return configured.rstrip("/")
    return request.url_root.rstrip("/") + "/fhir"


def check_acceptable() -> None:
    """Raise NotAcceptable when the client asks for a format other than JSON (_format wins over Accept)."""
    requested = request.args.get("_format")
    if requested is not None:
        requested = requested.strip().lower().split(";")[0]
        if requested in _XML_FORMATS:
            raise NotAcceptable("XML is not supported; use _format=json or application/fhir+json")
        if requested not in _FORMAT_ALIASES:
            raise NotAcceptable(f"Unknown _format {requested!r}; this server speaks application/fhir+json")
        return
    if not request.accept_mimetypes:
        return
    # Compare base types only: FHIR clients add parameters such as fhirVersion=4.0 that werkzeug would match on.
    offered = {value.split(";")[0].strip().lower() for value, quality in request.accept_mimetypes if quality > 0}
    if offered & (JSON_TYPES | {"*/*", "application/*"}):
        return
    raise NotAcceptable("This server only produces application/fhir+json (XML is not supported)")


def json_body(*, allowed: set[str] = JSON_TYPES):
    """Parse the request body as strict JSON after checking its Content-Type."""
    mimetype = request.mimetype
    if not mimetype:
        raise UnsupportedMediaType("Content-Type is required; send application/fhir+json")
    if mimetype in XML_TYPES:
        raise UnsupportedMediaType("XML is not supported; send application/fhir+json")
    if mimetype not in allowed:
        expected = " or ".join(sorted(allowed))
        raise UnsupportedMediaType(f"Content-Type {mimetype} is not supported here; send {expected}")
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise InvalidRequest("The request body is empty", code="structure")
    try:
        return jsonutil.loads(raw)
    except jsonutil.JSONSyntaxError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}", code="structure") from None


def if_match() -> int | None:
    """Return the version the client's If-Match names, if any."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    match = _ETAG.match(header)
    if not match:
        raise PreconditionFailed(f'If-Match must be a version ETag such as W/"3", got {header!r}', code="invalid")
    return int(match.group(1))


def prefer_return() -> str:
    """Return the Prefer: return= choice (minimal, representation or OperationOutcome)."""
    for part in request.headers.get("Prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key == "return" and value.strip('"') in {"minimal", "representation", "OperationOutcome"}:
                return value.strip('"')
    return "representation"


def http_date(moment: datetime) -> str:
    """Format a datetime as an HTTP date for Last-Modified."""
    return format_datetime(moment, usegmt=True)


def fhir_json(body: dict | None, status: int = 200, headers: dict | None = None) -> Response:
    """Build an application/fhir+json response."""
    pretty = request.args.get("_pretty") == "true"
    text = "" if body is None else jsonutil.dumps(body, pretty=pretty)
    response = Response(text, status=status, mimetype=FHIR_JSON, headers=headers or {})
    response.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    return response


def resource_headers(stored: StoredResource) -> dict[str, str]:
    """Return ETag and Last-Modified headers for a stored version."""
    return {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}


def version_url(stored: StoredResource) -> str:
    """Return the absolute URL of one version of a resource."""
    return f"{base_url()}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"


def write_response(stored: StoredResource, status: int, *, location: bool) -> Response:
    """Answer a write as the client's Prefer header asks."""
    headers = resource_headers(stored)
    if location:
        headers["Location"] = version_url(stored)
    else:
        headers["Content-Location"] = version_url(stored)
    choice = prefer_return()
    if choice == "minimal":
        return fhir_json(None, status, headers)
    if choice == "OperationOutcome":
        outcome = {"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"{stored.resource_type}/{stored.id} is at version {stored.version_id}"}]}
        return fhir_json(outcome, status, headers)
    return fhir_json(stored.content, status, headers)


def page_url(path: str, params: dict) -> str:
    """Return an absolute URL under the FHIR base with the given query parameters."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base_url()}{path}" + (f"?{query}" if query else "")


def instant(moment: datetime) -> str:
    """Format a datetime as a FHIR instant."""
    return format_instant(moment)
