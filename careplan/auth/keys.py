"""The token service's signing keys: created on first use, rotated without downtime, published as a JWK Set.

One key is active (it signs new tokens). ``rotate`` makes a new active key; the previous one keeps verifying until
every token it could have signed has expired, and is retired then. Its private half is erased at rotation, since
nothing signs with it any more. https://www.rfc-editor.org/rfc/rfc7517 (JWK), rfc7638 (thumbprints as kid).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from careplan.db import Database
from careplan.models import OAuthClient, SigningKey, utcnow

ALGORITHM = "ES256"
# Tokens being signed while a rotation commits may carry the old kid a moment after it was rotated out.
RETIREMENT_LEEWAY = timedelta(seconds=60)
LOCK_KEY = "careplan.auth.signing-keys"


@dataclass(frozen=True)
class ActiveKey:
    """The key that signs new tokens."""

    kid: str
    algorithm: str
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class KeyInfo:
    """A signing key as `careplan keys list` shows it."""

    kid: str
    algorithm: str
    status: str  # active, verifying (rotated out, still verifies) or retired
    created_at: datetime
    rotated_out_at: datetime | None
    retire_after: datetime | None


def status_of(row: SigningKey, now: datetime) -> str:
    """Return active, verifying or retired."""
    if row.retired_at is not None or (row.retire_after is not None and row.retire_after <= now):
        return "retired"
    return "active" if row.rotated_out_at is None else "verifying"


def signing_key(db: Database, *, now: datetime | None = None) -> ActiveKey:
    """Return the active signing key, creating the first one on first use."""
    now = now or utcnow()
    with db.reading() as session:
        row = _active_row(session)
        if row is not None:
            return ActiveKey(row.kid, row.algorithm, _private_key(row.private_key))
    # Serialise creation so that concurrent first requests agree on one key.
    with db.writing(lock_key=LOCK_KEY) as session:
        row = _active_row(session)
        if row is None:
            row = _new_key(now)
            session.add(row)
        return ActiveKey(row.kid, row.algorithm, _private_key(row.private_key))


def rotate(db: Database, *, token_lifetime: timedelta, retire_previous: bool = False,
           now: datetime | None = None) -> tuple[KeyInfo, list[KeyInfo]]:
    """Make a new active key; return it and the keys it replaced.

    The replaced keys verify until token_lifetime (plus a leeway) has passed, so no token in use fails; with
    retire_previous they are retired at once (a compromised key: every token it signed stops working).
    """
    now = now or utcnow()
    with db.writing(lock_key=LOCK_KEY) as session:
        _retire_expired(session, now)
        replaced = []
        for row in session.scalars(select(SigningKey).where(SigningKey.rotated_out_at.is_(None))):
            row.rotated_out_at = now
            row.retire_after = now if retire_previous else now + token_lifetime + RETIREMENT_LEEWAY
            if retire_previous:
                row.retired_at = now
            row.private_key = None
            replaced.append(row)
        new = _new_key(now)
        session.add(new)
        session.flush()
        return _info(new, now), [_info(row, now) for row in replaced]


def retire(db: Database, *, kid: str, now: datetime | None = None) -> KeyInfo | None:
    """Retire one key now: tokens it signed stop verifying. A new key is made on next use if it was the active one."""
    now = now or utcnow()
    with db.writing(lock_key=LOCK_KEY) as session:
        row = session.get(SigningKey, kid)
        if row is None:
            return None
        row.rotated_out_at = row.rotated_out_at or now
        row.retire_after = min(row.retire_after, now) if row.retire_after else now
        row.retired_at = row.retired_at or now
        row.private_key = None
        return _info(row, now)


# What verifying a token needs of its key and of its client, in one query (it runs on every request).
VERIFICATION_QUERY = (
    select(SigningKey.public_jwk, SigningKey.retired_at, SigningKey.retire_after,
           OAuthClient.client_id, OAuthClient.revoked_at)
    .select_from(SigningKey)
    .outerjoin(OAuthClient, OAuthClient.client_id == bindparam("client_id"))
    .where(SigningKey.kid == bindparam("kid"))
)


def verification_key(kid: str, public_jwk: str, retired_at: datetime | None, retire_after: datetime | None, *,
                     now: datetime) -> ec.EllipticCurvePublicKey | None:
    """Return the public key of a key row if it may still verify tokens (not retired), else None."""
    if retired_at is not None or (retire_after is not None and retire_after <= now):
        return None
    return _public_key(kid, public_jwk)


def published_jwks(db: Database, *, now: datetime | None = None) -> dict:
    """Return the JWK Set of every key that may verify tokens (RFC 7517 §5)."""
    now = now or utcnow()
    with db.reading() as session:
        rows = session.scalars(_verifying(now).order_by(SigningKey.created_at.desc(), SigningKey.kid)).all()
        return {"keys": [json.loads(row.public_jwk) for row in rows]}


def list_keys(db: Database, *, now: datetime | None = None) -> list[KeyInfo]:
    """Return every key, newest first."""
    now = now or utcnow()
    with db.reading() as session:
        rows = session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.kid)).all()
        return [_info(row, now) for row in rows]


def _verifying(now: datetime):
    return select(SigningKey).where(SigningKey.retired_at.is_(None),
                                    or_(SigningKey.retire_after.is_(None), SigningKey.retire_after > now))


def _active_row(session: Session) -> SigningKey | None:
    return session.scalars(
        select(SigningKey).where(SigningKey.rotated_out_at.is_(None), SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc(), SigningKey.kid).limit(1)).first()


def _retire_expired(session: Session, now: datetime) -> None:
    for row in session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None),
                                                        SigningKey.retire_after <= now)):
        row.retired_at = row.retire_after


def _new_key(now: datetime) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk = {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"]}
    kid = thumbprint(jwk)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    public = {**jwk, "kid": kid, "use": "sig", "alg": ALGORITHM}
    return SigningKey(kid=kid, algorithm=ALGORITHM, private_key=pem, public_jwk=json.dumps(public), created_at=now)


def thumbprint(jwk: dict) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of an EC or RSA public JWK."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _info(row: SigningKey, now: datetime) -> KeyInfo:
    return KeyInfo(row.kid, row.algorithm, status_of(row, now), row.created_at, row.rotated_out_at, row.retire_after)


# A kid is the thumbprint of its key, so what is cached under a kid never changes.
@lru_cache(maxsize=64)
def _private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key(pem.encode("ascii"), password=None)


@lru_cache(maxsize=256)
def _public_key(kid: str, jwk_json: str) -> ec.EllipticCurvePublicKey:
    return ECAlgorithm.from_jwk(jwk_json)
