"""Bearer-token authentication for /fhir and /api/v1, and the SMART scope check of each interaction.

Every request under those prefixes needs a valid access token (RFC 6750), except the explicit PUBLIC_PATHS. The
authenticated caller is ``g.principal`` (careplan.auth.Principal) for the authorisation and audit code that reads
it later; the scopes each endpoint needs are the data in careplan.auth.scopes.
https://www.rfc-editor.org/rfc/rfc6750
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import parse_qs

from flask import Flask, current_app, g, jsonify, request
from werkzeug.http import HTTP_STATUS_CODES

from api.database import get_db, get_settings
from api.fhir.http import base_url, fhir_json
from careplan import jsonutil
from careplan.auth import scopes as smart_scopes
from careplan.auth.exceptions import AuthError, InsufficientScope, TokenMissing
from careplan.auth.oidc import OidcVerifier
from careplan.auth.principal import Principal
from careplan.auth.tokens import TokenSettings, verify_access_token

log = logging.getLogger(__name__)

EXTENSION_KEY = "careplan.auth"
REALM = "careplan"
PROTECTED_PREFIXES = ("/fhir", "/api/v1", "/dashboard")
# Served without a token, to GET and HEAD only: what a client reads to learn how to authenticate, and the API docs.
PUBLIC_PATHS = frozenset({
    "/fhir/metadata",
    "/fhir/.well-known/smart-configuration",
    "/api/v1/openapi.json",
    "/api/v1/docs",
    "/docs",
})
_PUBLIC_METHODS = frozenset({"GET", "HEAD"})
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)
_UNSAFE_IN_CHALLENGE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def init_app(app: Flask) -> None:
    """Verify the bearer token of every protected request and answer refusals with a challenge."""
    settings = app.config["CAREPLAN_SETTINGS"]
    app.extensions[EXTENSION_KEY] = OidcVerifier(tuple(settings.oidc_issuers))
    app.before_request(authenticate)
    app.register_error_handler(AuthError, auth_error_response)


def is_protected(path: str, method: str) -> bool:
    """Tell whether a request needs a bearer token."""
    if path in PUBLIC_PATHS and method in _PUBLIC_METHODS:
        return False
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PROTECTED_PREFIXES)


def public_root() -> str:
    """Return the public URL of the server root (where /oauth and /.well-known live), without a trailing slash."""
    configured = get_settings().base_url
    if configured and configured.rstrip("/").endswith("/fhir"):
        return configured.rstrip("/")[: -len("/fhir")]
    return request.url_root.rstrip("/")


def token_settings() -> TokenSettings:
    """Return the issuer, audience and lifetime of careplan's access tokens for this server."""
    settings = get_settings()
    return TokenSettings(issuer=settings.token_issuer or public_root(), audience=settings.token_audience or base_url(),
                         lifetime=timedelta(seconds=settings.token_lifetime_seconds))


def current_principal() -> Principal | None:
    """Return the authenticated caller of this request (None on public paths)."""
    return g.get("principal")


def authenticate() -> None:
    """Before each request: verify the bearer token, expose g.principal, and check the interaction's scopes."""
    if not is_protected(request.path, request.method):
        return
    principal = verify_access_token(get_db(), _bearer_token(), settings=token_settings(),
                                    oidc=current_app.extensions[EXTENSION_KEY])
    g.principal = principal
    if request.url_rule is None:
        return  # nothing is routed here: the 404 or 405 comes after authentication, so it tells strangers nothing
    needs = _needs()
    lacking = smart_scopes.missing(principal.scopes, needs)
    if lacking:
        wanted = " ".join(f"{_context(principal)}/{need}" for need in lacking)
        raise InsufficientScope(f"the token's scopes do not cover {wanted}", scope=wanted)


def _bearer_token() -> str:
    header = request.headers.get("Authorization")
    if header is None or not header.lower().startswith("bearer"):
        raise TokenMissing("this endpoint needs a bearer token; get one from the token endpoint")
    match = _BEARER.match(header)
    if not match:
        raise AuthError("the Authorization header is not a well-formed bearer token")
    return match.group(1)


def _needs() -> list[smart_scopes.Need]:
    rule = _rule_for(request.endpoint or "")
    body = None
    if rule.target == "bundle" and not smart_scopes.grants_everything(g.principal.scopes):
        body = _bundle_body()
    return smart_scopes.needs_for(rule, view_args=request.view_args, type_parameter=_type_parameter(),
                                  bundle=body, base_url=base_url(), method=request.method)


def _type_parameter() -> str | None:
    values = request.args.getlist("_type")
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        # A POST search may name its types in the body. Read it through the cache so the view still gets it.
        form = parse_qs(request.get_data(cache=True).decode("utf-8", "replace"), keep_blank_values=True)
        values += form.get("_type", [])
    return ",".join(values) if values else None


def _rule_for(endpoint: str) -> smart_scopes.Rule:
    if request.path == "/fhir" or request.path.startswith("/fhir/"):
        blueprint, _, name = endpoint.partition(".")
        if blueprint == "fhir":
            return smart_scopes.FHIR_RULES.get(name, smart_scopes.FAIL_CLOSED)
        return smart_scopes.FAIL_CLOSED
    return smart_scopes.API_V1_RULES.get(endpoint, smart_scopes.FAIL_CLOSED)


def _bundle_body():
    # Only callers with narrower scopes pay for reading the Bundle here; the view gets the cached body.
    bundle_limit = getattr(get_settings(), "max_bundle_bytes", None)
    if bundle_limit:
        request.max_content_length = bundle_limit
    try:
        return jsonutil.loads(request.get_data(cache=True))
    except jsonutil.JSONSyntaxError:
        return None  # not understood: needs everything (the view then answers what is wrong with it)


def _context(principal: Principal) -> str:
    return "system" if principal.kind == "client" else "user"


def challenge(error: AuthError) -> str:
    """Return the WWW-Authenticate value for a refusal (RFC 6750 §3)."""
    value = f'Bearer realm="{REALM}"'
    if error.error:
        value += f', error="{error.error}", error_description="{_challenge_text(error.description)}"'
    if isinstance(error, InsufficientScope) and error.scope:
        value += f', scope="{_challenge_text(error.scope)}"'
    return value


def _challenge_text(text: str) -> str:
    return _UNSAFE_IN_CHALLENGE.sub("'", text.replace('"', "'"))


def auth_error_response(error: AuthError):
    """Answer a refused token: an OperationOutcome under /fhir, a JSON error elsewhere, with the challenge."""
    if error.status == 401:
        log.info("%s %s refused: %s", request.method, request.url_rule or request.path.split("/")[1],
                 error.description)
    headers = {"WWW-Authenticate": challenge(error)}
    if request.path == "/fhir" or request.path.startswith("/fhir/"):
        code = "login" if error.status == 401 else "forbidden"
        outcome = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": code, "diagnostics": error.description}]}
        return fhir_json(outcome, error.status, headers)
    body = {"code": error.status, "status": HTTP_STATUS_CODES[error.status], "message": error.description,
            "error": error.error or "unauthorized"}
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(headers)
    return response
