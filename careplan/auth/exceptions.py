"""Errors of authentication: refused bearer tokens (RFC 6750) and refused token requests (RFC 6749 §5.2)."""

from __future__ import annotations


class AuthError(Exception):
    """A request's bearer token was missing or refused; answered 401 (or 403) with WWW-Authenticate."""

    status = 401
    error: str | None = "invalid_token"

    def __init__(self, description: str):
        self.description = description
        super().__init__(description)


class TokenMissing(AuthError):
    """The request carries no bearer token (RFC 6750 §3.1: no error attribute in the challenge)."""

    error = None


class InvalidToken(AuthError):
    """The bearer token is expired, revoked, malformed, wrongly signed or for another audience."""

    error = "invalid_token"


class InsufficientScope(AuthError):
    """The token is valid but its scopes do not cover the interaction."""

    status = 403
    error = "insufficient_scope"

    def __init__(self, description: str, *, scope: str = ""):
        super().__init__(description)
        self.scope = scope


class OAuthError(Exception):
    """A token request refused with one of the errors of RFC 6749 §5.2."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str, *, basic_challenge: bool = False):
        self.description = description
        # RFC 6749 §5.2: a client that authenticated with the Authorization header gets a 401 challenge back.
        self.basic_challenge = basic_challenge
        super().__init__(description)

    def to_json(self) -> dict:
        return {"error": self.error, "error_description": self.description}


class InvalidRequestError(OAuthError):
    """The token request is malformed: missing or repeated parameters, more than one client authentication."""

    error = "invalid_request"


class InvalidClientError(OAuthError):
    """Client authentication failed: unknown or revoked client, wrong secret, or a bad client assertion."""

    error, status = "invalid_client", 401


class InvalidGrantError(OAuthError):
    """The authorization grant is invalid (the client-credentials grant has none, so careplan never raises it)."""

    error = "invalid_grant"


class UnauthorizedClientError(OAuthError):
    """The client is not registered for this grant type."""

    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthError):
    """The server does not support this grant type."""

    error = "unsupported_grant_type"


class InvalidScopeError(OAuthError):
    """The requested scope is malformed or none of it is registered for the client."""

    error = "invalid_scope"


class RegistrationError(ValueError):
    """A client registration is not acceptable (unknown role, bad organization, bad scopes or keys)."""


class UnknownClient(LookupError):
    """No client is registered under this id."""
