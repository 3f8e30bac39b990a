"""The OAuth 2.0 token endpoint (client-credentials grant, SMART Backend Services), the JWK Set and SMART discovery.

https://www.rfc-editor.org/rfc/rfc6749#section-4.4 (client credentials), #section-5.2 (errors)
https://hl7.org/fhir/smart-app-launch/backend-services.html
https://hl7.org/fhir/smart-app-launch/conformance.html (/.well-known/smart-configuration)
"""

from __future__ import annotations

import base64
import binascii
import logging
from urllib.parse import unquote_plus

from flask import Blueprint, jsonify, request

from api.auth import public_root, token_settings
from api.database import get_db
from careplan.auth import clients, keys, scopes, tokens
from careplan.auth.clients import CLIENT_ASSERTION_TYPE, ClientInfo
from careplan.auth.exceptions import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuthError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from careplan.resources import SUPPORTED_TYPES

log = logging.getLogger(__name__)

bp = Blueprint("oauth", __name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_TOKEN_PARAMETERS = ("grant_type", "scope", "client_id", "client_secret", "client_assertion_type",
                     "client_assertion")


@bp.post("/oauth/token")
def token():
    """Issue an access token to an authenticated client (client_credentials grant)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise InvalidRequestError("send the token request as application/x-www-form-urlencoded")
    form = request.form
    for name in _TOKEN_PARAMETERS:
        if len(form.getlist(name)) > 1:
            raise InvalidRequestError(f"the {name} parameter is repeated")
    params = {name: form.get(name) or None for name in _TOKEN_PARAMETERS}  # an empty value counts as omitted
    grant_type = params["grant_type"]
    if grant_type is None:
        raise InvalidRequestError("grant_type is required")
    if grant_type not in clients.SUPPORTED_GRANT_TYPES:
        raise UnsupportedGrantTypeError("careplan supports the client_credentials grant only")
    client = _authenticate_client(params)
    if grant_type not in client.grant_types:
        raise UnauthorizedClientError(f"this client is not registered for the {grant_type} grant")
    try:
        granted = scopes.grant(params["scope"], client.scopes)
    except scopes.ScopeError as exc:
        raise InvalidScopeError(str(exc)) from None
    if not granted:
        raise InvalidScopeError("none of the requested scopes is registered for this client")
    issued = tokens.issue_access_token(get_db(), client=client, scopes=granted, settings=token_settings())
    log.info("issued token %s to client %r (%s)", issued.jti, client.client_id, client.role)
    return jsonify(access_token=issued.access_token, token_type="Bearer", expires_in=issued.expires_in,
                   scope=str(issued.scope)), 200, NO_STORE


def _authenticate_client(params: dict) -> ClientInfo:
    basic = _basic_credentials()
    methods = [name for name, used in (("client_secret_basic", basic is not None),
                                       ("client_secret_post", params["client_secret"] is not None),
                                       ("private_key_jwt", params["client_assertion"] is not None
                                        or params["client_assertion_type"] is not None)) if used]
    if len(methods) > 1:
        raise InvalidRequestError(f"use one client authentication method, not {' and '.join(methods)}")
    if not methods:
        raise InvalidClientError("client authentication is required (client_secret_basic, client_secret_post "
                                 "or private_key_jwt)")
    if basic is not None:
        client_id, secret = basic
        if params["client_id"] is not None and params["client_id"] != client_id:
            raise InvalidRequestError("client_id does not match the Authorization header")
        return clients.authenticate_secret(get_db(), client_id=client_id, secret=secret, basic=True)
    if params["client_secret"] is not None:
        if params["client_id"] is None:
            raise InvalidRequestError("client_secret_post needs client_id")
        return clients.authenticate_secret(get_db(), client_id=params["client_id"], secret=params["client_secret"],
                                           basic=False)
    if params["client_assertion_type"] != CLIENT_ASSERTION_TYPE:
        raise InvalidRequestError(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    if params["client_assertion"] is None:
        raise InvalidRequestError("client_assertion is required with client_assertion_type")
    return clients.authenticate_assertion(get_db(), assertion=params["client_assertion"],
                                          token_url=f"{public_root()}/oauth/token", client_id=params["client_id"])


def _basic_credentials() -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClientError("the Authorization header of a token request must use the Basic scheme",
                                 basic_challenge=True)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClientError("the Basic credentials are not valid base64", basic_challenge=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise InvalidClientError("the Basic credentials must be client_id:client_secret", basic_challenge=True)
    # RFC 6749 §2.3.1: id and secret are form-encoded before they are put in the header.
    return unquote_plus(client_id), unquote_plus(secret)


@bp.errorhandler(OAuthError)
def oauth_error(error: OAuthError):
    """Answer a refused token request as RFC 6749 §5.2 says."""
    status = 401 if error.basic_challenge else error.status
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="careplan"'
    return jsonify(error.to_json()), status, headers


@bp.get("/oauth/jwks")
@bp.get("/.well-known/jwks.json")
def jwks():
    """Publish the public keys that verify careplan's access tokens (RFC 7517 JWK Set)."""
    keys.signing_key(get_db())  # a server that has issued nothing yet still publishes the key it will use
    return jsonify(keys.published_jwks(get_db()))


@bp.get("/.well-known/smart-configuration")
@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration():
    """Describe how clients authenticate (SMART App Launch 2.x conformance discovery)."""
    root = public_root()
    supported = ["system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs"]
    for resource_type in SUPPORTED_TYPES:
        supported += [f"system/{resource_type}.cruds", f"system/{resource_type}.rs"]
    return jsonify({
        "issuer": token_settings().issuer,
        "jwks_uri": f"{root}/oauth/jwks",
        "token_endpoint": f"{root}/oauth/token",
        "grant_types_supported": list(clients.SUPPORTED_GRANT_TYPES),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(clients.ASSERTION_ALGORITHMS),
        "scopes_supported": supported,
        "response_types_supported": [],  # no authorization endpoint: backend clients only
        "capabilities": ["client-confidential-symmetric", "client-confidential-asymmetric", "permission-v2",
                         "permission-v1"],
    })
