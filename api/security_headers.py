"""Security headers on every response, and CORS (off unless CAREPLAN_CORS_ORIGINS lists origins).

https://owasp.org/www-project-secure-headers/
https://fetch.spec.whatwg.org/#http-cors-protocol
"""

from __future__ import annotations

from flask import Flask, Response, request

from api.database import get_settings

NO_STORE_PREFIXES = ("/fhir", "/api", "/oauth", "/.well-known")
# The API documentation pages need scripts and styles; everything else is data and may load nothing.
DOCUMENTATION_PATHS = frozenset({"/docs", "/api/v1/docs"})
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
CORS_REQUEST_HEADERS = frozenset({
    "authorization", "content-type", "accept", "if-match", "if-none-match", "if-none-exist", "if-modified-since",
    "prefer", "x-request-id",
})
CORS_EXPOSED_HEADERS = "ETag, Location, Content-Location, Last-Modified, WWW-Authenticate"
CORS_MAX_AGE = "600"


def init_app(app: Flask) -> None:
    """Answer CORS preflights before authentication, and add the headers to every response."""
    app.before_request(answer_preflight)
    app.after_request(add_headers)


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    allowed = get_settings().cors_origins
    if not origin or not allowed:
        return None
    if "*" in allowed or origin.rstrip("/") in allowed:
        return origin
    return None


def answer_preflight() -> Response | None:
    """Answer a CORS preflight from an allowed origin (it carries no token, so it must not reach authentication)."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = _allowed_origin()
    if origin is None:
        return None  # not an allowed origin: the request goes on as any other, without CORS headers
    asked = {h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
             if h.strip()}
    response = Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
    response.headers["Access-Control-Allow-Headers"] = ", ".join(sorted(asked & CORS_REQUEST_HEADERS))
    response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
    return response


def add_headers(response: Response) -> Response:
    """Add the security headers (and CORS headers for an allowed origin) to a response."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    path = request.path
    if path not in DOCUMENTATION_PATHS:
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    if any(path == prefix or path.startswith(prefix + "/") for prefix in NO_STORE_PREFIXES):
        # Health data must not be kept by browsers or shared caches; clients revalidate with ETags instead.
        headers["Cache-Control"] = "no-store"
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if get_settings().cors_origins:
        response.vary.add("Origin")
        origin = _allowed_origin()
        if origin is not None:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    return response
