"""Access tokens: careplan's own (signed JWTs, RFC 9068 profile) and those of configured OpenID Connect issuers.

Own tokens carry iss, sub (= client_id), aud, exp, iat, jti, scope and the careplan claims ``careplan_role`` and
``careplan_organization``, with the signing key's kid in the header. Verification checks the signature against a key
that is not retired, the audience and expiry, and that the client has not been revoked since.
https://www.rfc-editor.org/rfc/rfc9068
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from careplan.auth import keys
from careplan.auth.clients import ClientInfo
from careplan.auth.exceptions import InvalidToken
from careplan.auth.jwts import decode_claims
from careplan.auth.oidc import OidcVerifier
from careplan.auth.principal import Principal
from careplan.auth.scopes import ScopeError, ScopeSet
from careplan.db import Database
from careplan.models import utcnow

log = logging.getLogger(__name__)

TOKEN_TYPE = "at+jwt"
ROLE_CLAIM = "careplan_role"
ORGANIZATION_CLAIM = "careplan_organization"
LEEWAY_SECONDS = 10  # clock skew between careplan's own processes
MAX_TOKEN_BYTES = 8192
# Reads which issuer a token claims to be from (one parse), before it is verified by that issuer's keys.
_UNVERIFIED = jwt.PyJWT()


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued, as the token endpoint answers it."""

    access_token: str
    expires_in: int
    scope: ScopeSet
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenSettings:
    """Who careplan's tokens are from and for, and how long they live."""

    issuer: str
    audience: str
    lifetime: timedelta


def issue_access_token(db: Database, *, client: ClientInfo, scopes: ScopeSet, settings: TokenSettings,
                       now: datetime | None = None) -> IssuedToken:
    """Sign an access token for client with the active key."""
    now = now or utcnow()
    key = keys.signing_key(db, now=now)
    issued_at = int(now.timestamp())
    expires_at = issued_at + int(settings.lifetime.total_seconds())
    jti = secrets.token_urlsafe(18)
    claims = {
        "iss": settings.issuer, "sub": client.client_id, "aud": settings.audience, "exp": expires_at,
        "iat": issued_at, "jti": jti, "client_id": client.client_id, "scope": str(scopes), ROLE_CLAIM: client.role,
    }
    if client.organization:
        claims[ORGANIZATION_CLAIM] = client.organization
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": TOKEN_TYPE})
    return IssuedToken(token, expires_at - issued_at, scopes, jti, datetime.fromtimestamp(expires_at, timezone.utc))


def verify_access_token(db: Database, token: str, *, settings: TokenSettings, oidc: OidcVerifier | None = None,
                        now: datetime | None = None) -> Principal:
    """Return the Principal of a valid token from careplan or a configured issuer; raise InvalidToken otherwise."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("the token is too long")
    try:
        unverified = _UNVERIFIED.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidToken("the token is not a well-formed JWT") from None
    header = unverified["header"]
    issuer = unverified["payload"].get("iss")
    if issuer == settings.issuer:
        return _verify_own(db, token, header, unverified["payload"].get("sub"), settings=settings,
                           now=now or utcnow())
    if isinstance(issuer, str) and oidc is not None and oidc.knows(issuer):
        return oidc.verify(token, header, issuer)
    raise InvalidToken("tokens from this issuer are not accepted here")


def _verify_own(db: Database, token: str, header: dict, unverified_subject: object, *, settings: TokenSettings,
                now: datetime) -> Principal:
    if header.get("alg") != keys.ALGORITHM or header.get("typ") != TOKEN_TYPE or not isinstance(header.get("kid"), str):
        raise InvalidToken("the token's header is not one careplan issues")
    subject = unverified_subject if isinstance(unverified_subject, str) else ""
    with db.engine.connect() as connection:  # a plain connection: this runs on every request
        row = connection.execute(keys.VERIFICATION_QUERY, {"kid": header["kid"], "client_id": subject}).first()
    public_key = keys.verification_key(header["kid"], row.public_jwk, row.retired_at, row.retire_after,
                                       now=now) if row is not None else None
    if public_key is None:
        raise InvalidToken("the token's signing key is unknown or retired")
    claims = decode_claims(token, public_key, leeway=LEEWAY_SECONDS, algorithms=[keys.ALGORITHM],
                           audience=settings.audience, issuer=settings.issuer, subject=subject,
                           required=["iss", "sub", "aud", "exp", "iat", "jti", "scope"])
    if row.client_id is None or row.revoked_at is not None:
        log.info("token of revoked or unknown client %r refused", subject[:64])
        raise InvalidToken("the token's client has been revoked")
    try:
        scopes = ScopeSet.parse(claims["scope"])
    except ScopeError:
        raise InvalidToken("the token's scope claim is malformed") from None
    return Principal(
        subject=claims["sub"], role=claims.get(ROLE_CLAIM, ""), organization=claims.get(ORGANIZATION_CLAIM),
        scopes=scopes, issuer=claims["iss"], kind="client", client_id=claims["sub"], token_id=claims["jti"],
        expires_at=datetime.fromtimestamp(claims["exp"], timezone.utc))

