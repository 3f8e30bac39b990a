"""Registered OAuth 2.0 clients and how they authenticate at the token endpoint.

Clients authenticate with a secret (client_secret_basic or client_secret_post; RFC 6749 §2.3.1) kept only as a
scrypt hash, or with a JWT assertion signed by a registered key (private_key_jwt; RFC 7523 §2.2 as profiled by
SMART Backend Services: https://hl7.org/fhir/smart-app-launch/backend-services.html).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import jwt
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from careplan.auth.exceptions import InvalidClientError, RegistrationError, UnknownClient
from careplan.auth.principal import ORGANIZATION_REFERENCE, ROLES
from careplan.auth.scopes import ScopeError, ScopeSet
from careplan.db import Database
from careplan.models import OAuthClient, UsedClientAssertion, utcnow

log = logging.getLogger(__name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")  # what SMART Backend Services requires servers to accept
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
ASSERTION_LEEWAY = timedelta(seconds=30)  # clock skew between the client and us
SUPPORTED_GRANT_TYPES = ("client_credentials",)
# Client secrets are 256 random bits, so the slow hash is defence in depth for a leaked table, not what keeps them
# unguessable: 16 MiB and ~80 ms a check. The parameters are stored with each hash, so they can be raised later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
# Scopes a client gets when registered without --scopes; the authorisation policy narrows what each role sees.
DEFAULT_SCOPES: dict[str, str] = {
    "admin": "system/*.cruds",
    "coordinator": "system/*.cruds",
    "ehr": "system/*.cruds",
    "partner": "system/Task.rus system/ServiceRequest.rs system/Patient.rs system/Communication.crus",
    # A programme lead reads measures and the directory they are about; the policy hides every patient from it.
    "lead": "system/Measure.rs system/MeasureReport.rs system/Organization.rs system/HealthcareService.rs "
            "system/Location.rs system/Practitioner.rs system/PractitionerRole.rs system/PlanDefinition.rs "
            "system/ActivityDefinition.rs system/Questionnaire.rs system/CodeSystem.rs system/ValueSet.rs "
            "system/StructureDefinition.rs",
}
_PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@dataclass(frozen=True)
class ClientInfo:
    """A registered client, without its secret."""

    client_id: str
    name: str
    role: str
    organization: str | None
    scopes: ScopeSet
    grant_types: tuple[str, ...]
    auth_methods: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class NewClient:
    """A client just registered, with its secret: the only time the secret is known in clear."""

    client: ClientInfo
    secret: str | None


def register(db: Database, *, name: str, role: str, organization: str | None = None, scopes: str | None = None,
             jwks: dict | None = None, with_secret: bool = True, client_id: str | None = None,
             grant_types: tuple[str, ...] = SUPPORTED_GRANT_TYPES, now: datetime | None = None) -> NewClient:
    """Register a client; return it with its secret in clear (never stored), if it has one."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise RegistrationError("a client needs a name of 1 to 200 characters")
    if role not in ROLES:
        raise RegistrationError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if organization is not None and not ORGANIZATION_REFERENCE.match(organization):
        raise RegistrationError(f"organization must look like Organization/<id>, got {organization!r}")
    if role == "partner" and organization is None:
        raise RegistrationError("a partner client acts for an agency: give --organization Organization/<id>")
    try:
        scope_set = ScopeSet.parse(DEFAULT_SCOPES[role] if scopes is None else scopes)
    except ScopeError as exc:
        raise RegistrationError(str(exc)) from None
    if not scope_set:
        raise RegistrationError("a client needs at least one SMART resource scope, e.g. system/CarePlan.rs")
    if jwks is not None:
        validate_jwks(jwks)
    client_id = client_id or secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(32) if with_secret else None
    row = OAuthClient(
        client_id=client_id, name=name, role=role, organization=organization, scopes=str(scope_set),
        grant_types=" ".join(grant_types), secret_hash=hash_secret(secret) if secret else None,
        jwks=json.dumps(jwks) if jwks is not None else None, created_at=now or utcnow())
    try:
        with db.writing() as session:
            session.add(row)
    except IntegrityError:
        raise RegistrationError(f"a client {client_id!r} is already registered") from None
    return NewClient(_info(row), secret)


def get(db: Database, client_id: str) -> ClientInfo:
    """Return one client (revoked ones too)."""
    with db.reading() as session:
        row = session.get(OAuthClient, client_id)
        if row is None:
            raise UnknownClient(client_id)
        return _info(row)


def list_clients(db: Database) -> list[ClientInfo]:
    """Return every client, oldest first."""
    with db.reading() as session:
        rows = session.scalars(select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.client_id)).all()
        return [_info(row) for row in rows]


def revoke(db: Database, *, client_id: str, now: datetime | None = None) -> ClientInfo:
    """Revoke a client: it gets no new token, and the tokens it holds stop working on their next request."""
    with db.writing() as session:
        row = session.get(OAuthClient, client_id)
        if row is None:
            raise UnknownClient(client_id)
        if row.revoked_at is None:
            row.revoked_at = now or utcnow()
        return _info(row)


def rotate_secret(db: Database, *, client_id: str) -> str:
    """Give a client a new secret (the old one stops working) and return it in clear."""
    secret = secrets.token_urlsafe(32)
    with db.writing() as session:
        row = session.get(OAuthClient, client_id)
        if row is None:
            raise UnknownClient(client_id)
        row.secret_hash = hash_secret(secret)
    return secret


def secret_matches(db: Database, *, client_id: str, secret: str) -> bool:
    """Tell whether secret is the current secret of an active client."""
    with db.reading() as session:
        row = session.get(OAuthClient, client_id)
        return row is not None and row.revoked_at is None and row.secret_hash is not None and \
            verify_secret(secret, row.secret_hash)


def authenticate_secret(db: Database, *, client_id: str, secret: str, basic: bool) -> ClientInfo:
    """Return the client whose id and secret these are; raise InvalidClientError otherwise."""
    with db.reading() as session:
        row = session.get(OAuthClient, client_id)
        stored = row.secret_hash if row is not None else None
        info = _info(row) if row is not None else None
    # Hash even when there is nothing to compare with, so the time taken does not tell which client ids exist.
    matches = verify_secret(secret, stored or _dummy_hash()) and stored is not None
    if info is None or not matches or info.revoked:
        log.info("client authentication failed for client id %r (%s)", client_id[:64],
                 "unknown" if info is None else "revoked" if info.revoked else "wrong secret")
        raise InvalidClientError("client authentication failed", basic_challenge=basic)
    return info


def authenticate_assertion(db: Database, *, assertion: str, token_url: str, client_id: str | None = None,
                           now: datetime | None = None) -> ClientInfo:
    """Return the client that signed this JWT assertion (private_key_jwt); raise InvalidClientError otherwise.

    Checks, per SMART Backend Services: RS384 or ES384 signed by one of the client's registered keys, iss = sub =
    client id, aud = the token endpoint URL, exp no more than five minutes ahead, and a jti not seen before.
    """
    now = now or utcnow()
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidClientError("client_assertion is not a well-formed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise InvalidClientError(f"client_assertion must be signed with {' or '.join(ASSERTION_ALGORITHMS)}")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or unverified.get("sub") != issuer:
        raise InvalidClientError("client_assertion must have iss and sub both equal to the client id")
    if client_id is not None and client_id != issuer:
        raise InvalidClientError("client_id does not match the client_assertion's issuer")
    with db.reading() as session:
        row = session.get(OAuthClient, issuer)
        info = _info(row) if row is not None else None
        registered = json.loads(row.jwks) if row is not None and row.jwks else None
    if info is None or info.revoked or registered is None:
        log.info("client assertion refused for client id %r (%s)", issuer[:64],
                 "unknown" if info is None else "revoked" if info.revoked else "no registered keys")
        raise InvalidClientError("client authentication failed")
    claims = _verify_assertion(assertion, header, registered, issuer=issuer, token_url=token_url)
    expires = datetime.fromtimestamp(claims["exp"], timezone.utc)
    if expires - now > MAX_ASSERTION_LIFETIME + ASSERTION_LEEWAY:
        raise InvalidClientError("client_assertion exp must be no more than 5 minutes in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise InvalidClientError("client_assertion needs a jti of 1 to 255 characters")
    _record_jti(db, client_id=issuer, jti=jti, expires_at=expires + ASSERTION_LEEWAY, now=now)
    return info


def _verify_assertion(assertion: str, header: dict, registered: dict, *, issuer: str, token_url: str) -> dict:
    algorithm = header["alg"]
    key_type = "RSA" if algorithm.startswith("RS") else "EC"
    candidates = [k for k in registered.get("keys", []) if k.get("kty") == key_type
                  and k.get("alg", algorithm) == algorithm and k.get("use", "sig") == "sig"
                  and ("kid" not in header or k.get("kid") == header["kid"])]
    if not candidates:
        raise InvalidClientError("no registered key of the client matches the client_assertion's kid and alg")
    failure = "client_assertion signature does not verify"
    for candidate in candidates:
        try:
            key = jwt.PyJWK(candidate, algorithm)
            return jwt.decode(assertion, key, algorithms=[algorithm], audience=token_url, issuer=issuer,
                              leeway=ASSERTION_LEEWAY,
                              options={"require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            failure = "client_assertion has expired"
        except jwt.InvalidAudienceError:
            failure = f"client_assertion aud must be the token endpoint URL {token_url}"
        except jwt.MissingRequiredClaimError as exc:
            failure = f"client_assertion lacks the {exc.claim} claim"
        except jwt.PyJWTError as exc:
            failure = f"client_assertion refused: {exc}"
        break
    raise InvalidClientError(failure)


def _record_jti(db: Database, *, client_id: str, jti: str, expires_at: datetime, now: datetime) -> None:
    try:
        with db.writing() as session:
            session.execute(delete(UsedClientAssertion).where(UsedClientAssertion.expires_at < now))
            session.add(UsedClientAssertion(client_id=client_id, jti=jti, expires_at=expires_at))
    except IntegrityError:
        raise InvalidClientError("client_assertion jti has already been used") from None


def validate_jwks(jwks: object) -> None:
    """Check a JWK Set holds only public RSA (2048 bits or more) or EC signing keys."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise RegistrationError('the JWK Set must be {"keys": [...]} with at least one key')
    for number, key in enumerate(jwks["keys"], 1):
        if not isinstance(key, dict):
            raise RegistrationError(f"key {number} of the JWK Set is not an object")
        if _PRIVATE_JWK_MEMBERS & key.keys():
            raise RegistrationError(f"key {number} of the JWK Set holds private key material: register public keys")
        if key.get("kty") not in ("RSA", "EC"):
            raise RegistrationError(f"key {number} of the JWK Set must be an RSA or EC key")
        try:
            parsed = jwt.PyJWK(key, "RS384" if key["kty"] == "RSA" else _ec_algorithm(key)).key
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise RegistrationError(f"key {number} of the JWK Set is not usable: {exc}") from None
        if key["kty"] == "RSA" and parsed.key_size < 2048:
            raise RegistrationError(f"key {number} of the JWK Set is an RSA key under 2048 bits")


def _ec_algorithm(key: dict) -> str:
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(key.get("crv"), "ES384")


def hash_secret(secret: str) -> str:
    """Hash a client secret with scrypt and a fresh salt: ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Tell in constant time whether secret hashes to stored."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(secret.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=SCRYPT_MAXMEM, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, _unb64(expected))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_secret(secrets.token_urlsafe(32))


def _info(row: OAuthClient) -> ClientInfo:
    methods = []
    if row.secret_hash:
        methods += ["client_secret_basic", "client_secret_post"]
    if row.jwks:
        methods.append("private_key_jwt")
    return ClientInfo(
        client_id=row.client_id, name=row.name, role=row.role, organization=row.organization,
        scopes=ScopeSet.parse(row.scopes), grant_types=tuple(row.grant_types.split()), auth_methods=tuple(methods),
        created_at=row.created_at, revoked_at=row.revoked_at)
