"""Access tokens from the OpenID Connect issuers that people sign in at (each organisation's identity provider).

Each configured issuer names its audience, where its keys are (``jwks_uri``, or discovered from
``<issuer>/.well-known/openid-configuration``), and which claims carry the careplan role, organisation and scopes.
Keys are fetched over HTTP and cached; a token signed with a kid the cache does not know triggers a refetch (at most
once per ``jwks_min_refetch_seconds``), so an issuer can rotate its keys without anyone touching careplan.
https://openid.net/specs/openid-connect-discovery-1_0.html
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import jwt

from careplan.auth.exceptions import InvalidToken
from careplan.auth.jwts import decode_claims
from careplan.auth.principal import ORGANIZATION_REFERENCE, ROLES, Principal
from careplan.auth.scopes import ScopeError, ScopeSet

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5
MAX_DOCUMENT_BYTES = 1024 * 1024

Fetch = Callable[[str], dict]


@dataclass(frozen=True)
class OidcIssuer:
    """One trusted OpenID Connect issuer and how its claims map to careplan's role, organisation and scopes."""

    issuer: str
    audience: tuple[str, ...]
    jwks_uri: str | None = None
    role_claim: str = "careplan_role"  # a dotted path reaches nested claims, e.g. realm_access.roles
    organization_claim: str | None = "careplan_organization"
    scopes_claim: str = "scope"
    default_scopes: str = ""  # granted when the token carries no SMART scope
    allowed_scopes: str | None = None  # when set, the token's scopes are cut down to these
    default_role: str | None = None
    role_map: Mapping[str, str] = field(default_factory=dict)  # issuer's value -> careplan role
    organization: str | None = None  # every person from this issuer acts for this organisation
    # An organisation's identity provider should not be able to make its users careplan administrators.
    allowed_roles: tuple[str, ...] = ("coordinator", "partner", "lead")
    jwks_cache_seconds: int = 300
    jwks_min_refetch_seconds: int = 30


def parse_issuers(raw: str | None) -> tuple[OidcIssuer, ...]:
    """Parse CAREPLAN_OIDC_ISSUERS (a JSON list of objects); raise ValueError naming what is wrong."""
    if raw is None or not raw.strip():
        return ()
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ValueError("must be a JSON list of issuer objects")
    issuers = []
    known = {f.name for f in OidcIssuer.__dataclass_fields__.values()}
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ValueError(f"entry {number} is not an object")
        unknown = set(item) - known
        if unknown:
            raise ValueError(f"entry {number} has unknown keys: {', '.join(sorted(unknown))}")
        if not isinstance(item.get("issuer"), str) or not item.get("audience"):
            raise ValueError(f"entry {number} needs issuer and audience")
        audience = item["audience"]
        values = {**item, "audience": (audience,) if isinstance(audience, str) else tuple(audience),
                  "allowed_roles": tuple(item.get("allowed_roles", OidcIssuer.allowed_roles)),
                  "role_map": dict(item.get("role_map", {}))}
        issuer = OidcIssuer(**values)
        _check_url(issuer.issuer, f"entry {number} issuer")
        if issuer.jwks_uri:
            _check_url(issuer.jwks_uri, f"entry {number} jwks_uri")
        for role in (*issuer.allowed_roles, *issuer.role_map.values(), *filter(None, [issuer.default_role])):
            if role not in ROLES:
                raise ValueError(f"entry {number}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if issuer.organization and not ORGANIZATION_REFERENCE.match(issuer.organization):
            raise ValueError(f"entry {number}: organization must look like Organization/<id>")
        try:
            ScopeSet.parse(issuer.default_scopes)
            ScopeSet.parse(issuer.allowed_scopes)
        except ScopeError as exc:
            raise ValueError(f"entry {number}: {exc}") from None
        issuers.append(issuer)
    if len({i.issuer for i in issuers}) != len(issuers):
        raise ValueError("lists an issuer twice")
    return tuple(issuers)


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return  # a local issuer (development, tests)
    raise ValueError(f"{what} must be an https URL (http only for a loopback host), got {url!r}")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def fetch_json(url: str) -> dict:
    """GET a JSON document over HTTP(S) with a timeout and a size cap."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - URL is checked
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched."""


class JwksCache:
    """The signing keys of one issuer, fetched on demand and kept for ``jwks_cache_seconds``."""

    def __init__(self, issuer: OidcIssuer, fetch: Fetch, clock: Callable[[], float] = time.monotonic):
        self.issuer = issuer
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        # kid -> (key, the alg the issuer declared for it, if any)
        self._keys: dict[str | None, tuple[jwt.PyJWK, str | None]] | None = None
        self._fetched_at = float("-inf")
        self._jwks_uri = issuer.jwks_uri

    def key(self, kid: str | None) -> tuple[jwt.PyJWK, str | None] | None:
        """Return the key with this kid (the only key, when the token names none), or None."""
        with self._lock:
            now = self._clock()
            if self._keys is None or now - self._fetched_at >= self.issuer.jwks_cache_seconds:
                self._refresh(now)
            found = self._find(kid)
            if found is None and now - self._fetched_at >= self.issuer.jwks_min_refetch_seconds:
                self._refresh(now)  # the issuer may have rotated its keys since we last looked
                found = self._find(kid)
            return found

    def _find(self, kid: str | None) -> tuple[jwt.PyJWK, str | None] | None:
        keys = self._keys or {}
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _refresh(self, now: float) -> None:
        try:
            if self._jwks_uri is None:
                self._jwks_uri = self._discover()
            document = self._fetch(self._jwks_uri)
            keys = {}
            for entry in document.get("keys", []):
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                try:
                    keys[entry.get("kid")] = (jwt.PyJWK(entry), entry.get("alg"))
                except jwt.PyJWTError:
                    continue  # a key type or curve we cannot use; the others still can be
            self._keys = keys
        except (OSError, ValueError, http.client.HTTPException) as exc:
            log.warning("could not fetch the keys of OpenID Connect issuer %s: %s", self.issuer.issuer,
                        type(exc).__name__)
            if self._keys is None:
                raise KeysUnavailable(self.issuer.issuer) from None
            # Keep the keys we had: an issuer briefly down should not sign everyone out.
        finally:
            self._fetched_at = now

    def _discover(self) -> str:
        url = self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._fetch(url)
        if document.get("issuer") != self.issuer.issuer:
            raise ValueError(f"discovery document of {self.issuer.issuer} names issuer {document.get('issuer')!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError(f"discovery document of {self.issuer.issuer} has no jwks_uri")
        _check_url(jwks_uri, "jwks_uri")
        return jwks_uri


class OidcVerifier:
    """Verify access tokens from the configured issuers and map them to Principals."""

    def __init__(self, issuers: tuple[OidcIssuer, ...], *, fetch: Fetch = fetch_json,
                 clock: Callable[[], float] = time.monotonic):
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        self.caches = {issuer.issuer: JwksCache(issuer, fetch, clock) for issuer in issuers}

    def knows(self, issuer: str) -> bool:
        return issuer in self.issuers

    def verify(self, token: str, header: dict, issuer_url: str) -> Principal:
        """Verify a token from issuer_url (already read, unverified, from the token) and return its Principal."""
        issuer = self.issuers[issuer_url]
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"tokens from {issuer_url} must be signed with one of {', '.join(ALGORITHMS)}")
        try:
            found = self.caches[issuer_url].key(header.get("kid"))
        except KeysUnavailable:
            raise InvalidToken(f"the signing keys of {issuer_url} could not be fetched") from None
        if found is None:
            raise InvalidToken(f"the token's signing key is not among {issuer_url}'s keys")
        key, declared_algorithm = found
        if declared_algorithm is not None and declared_algorithm != algorithm:
            raise InvalidToken("the token's alg does not match its key's")
        claims = decode_claims(token, key.key, leeway=LEEWAY_SECONDS, algorithms=[algorithm],
                               audience=list(issuer.audience), issuer=issuer.issuer,
                               required=["iss", "sub", "aud", "exp", "iat"])
        return _principal(issuer, claims)


def _principal(issuer: OidcIssuer, claims: dict) -> Principal:
    role = _role(issuer, _claim(claims, issuer.role_claim))
    organization = _organization(issuer, claims)
    if role == "partner" and organization is None:
        raise InvalidToken("a partner token must name the organization it acts for")
    try:
        scopes = _scopes(issuer, _claim(claims, issuer.scopes_claim))
    except ScopeError as exc:
        raise InvalidToken(f"the token's scopes are not acceptable: {exc}") from None
    client_id = claims.get("azp") or claims.get("client_id")
    return Principal(
        subject=str(claims["sub"]), role=role, organization=organization, scopes=scopes, issuer=issuer.issuer,
        kind="user", client_id=client_id if isinstance(client_id, str) else None,
        token_id=claims.get("jti") if isinstance(claims.get("jti"), str) else None,
        expires_at=datetime.fromtimestamp(claims["exp"], timezone.utc))


def _claim(claims: dict, path: str | None):
    value: object = claims
    for part in (path or "").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _role(issuer: OidcIssuer, value) -> str:
    values = value if isinstance(value, list) else [value] if value is not None else []
    roles = {issuer.role_map.get(v, v) for v in values if isinstance(v, str)} & set(ROLES)
    if len(roles) > 1:
        raise InvalidToken(f"the token carries more than one careplan role ({', '.join(sorted(roles))})")
    role = roles.pop() if roles else issuer.default_role
    if role is None:
        raise InvalidToken("the token carries no careplan role")
    if role not in issuer.allowed_roles:
        raise InvalidToken(f"{issuer.issuer} may not grant the {role} role")
    return role


def _organization(issuer: OidcIssuer, claims: dict) -> str | None:
    value = _claim(claims, issuer.organization_claim) if issuer.organization_claim else None
    if isinstance(value, str) and value and not value.startswith("Organization/"):
        value = f"Organization/{value}"
    if value is not None and (not isinstance(value, str) or not ORGANIZATION_REFERENCE.match(value)):
        raise InvalidToken("the token's organization claim is not an Organization id")
    if issuer.organization:
        if value is not None and value != issuer.organization:
            raise InvalidToken(f"{issuer.issuer} may only sign in people of {issuer.organization}")
        return issuer.organization
    return value


def _scopes(issuer: OidcIssuer, value) -> ScopeSet:
    if isinstance(value, list):
        value = [v for v in value if isinstance(v, str)]
    elif not isinstance(value, str):
        value = None
    scopes = ScopeSet.parse(value)
    if not scopes:
        scopes = ScopeSet.parse(issuer.default_scopes)
    if issuer.allowed_scopes is not None:
        scopes = scopes.intersect(ScopeSet.parse(issuer.allowed_scopes))
    return scopes
