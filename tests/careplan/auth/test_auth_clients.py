"""Client registration, secrets kept as scrypt hashes, and client authentication (secret and signed assertion)."""

import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from careplan.auth import clients
from careplan.auth.exceptions import InvalidClientError, RegistrationError, UnknownClient
from careplan.models import OAuthClient, UsedClientAssertion, utcnow
from tests.careplan.auth.support import TOKEN_URL, client_assertion, ec_key, public_jwk, rsa_key


def _stored_hash(database, client_id) -> str:
    with database.reading() as session:
        return session.get(OAuthClient, client_id).secret_hash


def test_registration_keeps_only_a_salted_scrypt_hash(database):
    first = clients.register(database, name="Agency A", role="partner", organization="Organization/agency-a")
    second = clients.register(database, name="Agency B", role="partner", organization="Organization/agency-b")
    stored = _stored_hash(database, first.client.client_id)
    assert first.secret and first.secret not in stored
    assert stored.startswith("scrypt$16384$8$1$")
    assert stored.split("$")[4] != _stored_hash(database, second.client.client_id).split("$")[4]
    assert clients.verify_secret(first.secret, stored)
    assert not clients.verify_secret(second.secret, stored)
    assert not clients.verify_secret(first.secret, stored.replace("scrypt$", "bcrypt$"))
    assert not clients.verify_secret(first.secret, "garbage")


def test_registration_defaults_scopes_by_role_and_lists_without_secrets(database):
    admin = clients.register(database, name="Ops", role="admin")
    assert str(admin.client.scopes) == "system/*.cruds"
    assert admin.client.auth_methods == ("client_secret_basic", "client_secret_post")
    listed = clients.list_clients(database)
    assert [c.client_id for c in listed] == [admin.client.client_id]
    assert not hasattr(listed[0], "secret")


@pytest.mark.parametrize("kwargs, message", [
    ({"role": "superuser"}, "role must be one of"),
    ({"role": "partner"}, "partner client acts for an agency"),
    ({"role": "admin", "organization": "agency-a"}, "Organization/<id>"),
    ({"role": "admin", "scopes": "system/CarePlan.xyz"}, "malformed scope"),
    ({"role": "admin", "scopes": "openid"}, "at least one SMART resource scope"),
    ({"role": "admin", "name": " "}, "needs a name"),
    ({"role": "ehr", "jwks": {"keys": []}}, "at least one key"),
    ({"role": "ehr", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "private key material"),
    ({"role": "ehr", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "abc"}]}}, "RSA or EC"),
    ({"role": "ehr", "jwks": {"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}}, "not usable"),
])
def test_bad_registrations_are_refused(database, kwargs, message):
    with pytest.raises(RegistrationError, match=message):
        clients.register(database, **{"name": "x", **kwargs})


def test_registered_keys_must_be_public_and_strong(database):
    private = public_jwk(rsa_key(), kid="k1")
    private["d"] = "c2VjcmV0"
    with pytest.raises(RegistrationError, match="private key material"):
        clients.register(database, name="x", role="ehr", jwks={"keys": [private]})
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(RegistrationError, match="under 2048 bits"):
        clients.register(database, name="x", role="ehr", jwks={"keys": [public_jwk(weak, kid="weak")]})


def test_a_client_id_is_registered_once(database):
    clients.register(database, name="x", role="admin", client_id="same")
    with pytest.raises(RegistrationError, match="already registered"):
        clients.register(database, name="y", role="admin", client_id="same")


def test_secret_authentication(database):
    new = clients.register(database, name="EHR", role="ehr")
    assert clients.authenticate_secret(database, client_id=new.client.client_id, secret=new.secret,
                                       basic=True).role == "ehr"
    for client_id, secret in ((new.client.client_id, "wrong"), ("nobody", new.secret)):
        with pytest.raises(InvalidClientError) as refused:
            clients.authenticate_secret(database, client_id=client_id, secret=secret, basic=True)
        assert refused.value.basic_challenge and refused.value.status == 401


def test_revoked_and_rotated_secrets_stop_working(database):
    new = clients.register(database, name="EHR", role="ehr")
    fresh = clients.rotate_secret(database, client_id=new.client.client_id)
    with pytest.raises(InvalidClientError):
        clients.authenticate_secret(database, client_id=new.client.client_id, secret=new.secret, basic=False)
    assert clients.authenticate_secret(database, client_id=new.client.client_id, secret=fresh, basic=False)
    revoked = clients.revoke(database, client_id=new.client.client_id)
    assert revoked.revoked
    with pytest.raises(InvalidClientError):
        clients.authenticate_secret(database, client_id=new.client.client_id, secret=fresh, basic=False)
    assert not clients.secret_matches(database, client_id=new.client.client_id, secret=fresh)
    with pytest.raises(UnknownClient):
        clients.revoke(database, client_id="nobody")


@pytest.fixture
def jwt_client(database):
    jwks = {"keys": [public_jwk(rsa_key(), kid="rsa-1", alg="RS384"),
                     public_jwk(ec_key(), kid="ec-1", alg="ES384")]}
    new = clients.register(database, name="Backend", role="ehr", jwks=jwks, with_secret=False)
    assert new.secret is None and new.client.auth_methods == ("private_key_jwt",)
    return new.client.client_id


@pytest.mark.parametrize("key, kid, alg", [(rsa_key, "rsa-1", "RS384"), (ec_key, "ec-1", "ES384"),
                                           (rsa_key, None, "RS384")])
def test_assertion_authentication(database, jwt_client, key, kid, alg):
    assertion = client_assertion(key(), client_id=jwt_client, kid=kid, alg=alg)
    assert clients.authenticate_assertion(database, assertion=assertion, token_url=TOKEN_URL).client_id == jwt_client


def test_an_assertion_is_used_once(database, jwt_client):
    assertion = client_assertion(rsa_key(), client_id=jwt_client, kid="rsa-1", jti="once")
    clients.authenticate_assertion(database, assertion=assertion, token_url=TOKEN_URL)
    with pytest.raises(InvalidClientError, match="jti has already been used"):
        clients.authenticate_assertion(database, assertion=assertion, token_url=TOKEN_URL)
    # The same jti from another client is another assertion.
    other = clients.register(database, name="Other", role="ehr", with_secret=False,
                             jwks={"keys": [public_jwk(rsa_key(), kid="rsa-1")]}).client.client_id
    clients.authenticate_assertion(database, assertion=client_assertion(
        rsa_key(), client_id=other, kid="rsa-1", jti="once"), token_url=TOKEN_URL)


def test_used_jtis_are_forgotten_once_expired(database, jwt_client):
    clients.authenticate_assertion(database, token_url=TOKEN_URL, assertion=client_assertion(
        rsa_key(), client_id=jwt_client, kid="rsa-1"))
    later = utcnow() + timedelta(minutes=10)
    clients.authenticate_assertion(database, token_url=TOKEN_URL, now=later, assertion=client_assertion(
        rsa_key(), client_id=jwt_client, kid="rsa-1", expires_in=900))
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(UsedClientAssertion)) == 1


def _other_rsa():
    return rsa_key("not-registered")


@pytest.mark.parametrize("make, message", [
    (lambda c: "not-a-jwt", "not a well-formed JWT"),
    (lambda c: client_assertion(rsa_key(), client_id=c, kid="rsa-1", alg="RS256"), "RS384 or ES384"),
    (lambda c: jwt.encode({"iss": c, "sub": c}, "a-shared-secret-of-at-least-forty-eight-bytes-for-hs384!!",
                          algorithm="HS384"),
     "RS384 or ES384"),
    (lambda c: client_assertion(rsa_key(), client_id=c, kid="rsa-1", sub="someone-else"), "iss and sub"),
    (lambda c: client_assertion(rsa_key(), client_id=c, kid="rsa-1", aud="https://elsewhere/token"),
     "aud must be the token endpoint"),
    (lambda c: client_assertion(rsa_key(), client_id=c, kid="rsa-1", expires_in=-120), "expired"),
    (lambda c: client_assertion(rsa_key(), client_id=c, kid="rsa-1", expires_in=3600), "no more than 5 minutes"),
    (lambda c: client_assertion(_other_rsa(), client_id=c, kid="rsa-1"), "signature does not verify"),
    (lambda c: client_assertion(rsa_key(), client_id=c, kid="unknown"), "no registered key"),
    (lambda c: client_assertion(rsa_key(), client_id="nobody", kid="rsa-1"), "client authentication failed"),
    (lambda c: jwt.encode({"iss": c, "sub": c, "aud": TOKEN_URL, "exp": int(time.time()) + 60}, rsa_key(),
                          algorithm="RS384", headers={"kid": "rsa-1"}), "lacks the jti claim"),
])
def test_bad_assertions_are_refused(database, jwt_client, make, message):
    with pytest.raises(InvalidClientError, match=message):
        clients.authenticate_assertion(database, assertion=make(jwt_client), token_url=TOKEN_URL)


def test_assertions_of_revoked_or_keyless_clients_are_refused(database, jwt_client):
    secret_only = clients.register(database, name="Secret only", role="ehr").client.client_id
    with pytest.raises(InvalidClientError):
        clients.authenticate_assertion(database, token_url=TOKEN_URL, assertion=client_assertion(
            rsa_key(), client_id=secret_only, kid="rsa-1"))
    clients.revoke(database, client_id=jwt_client)
    with pytest.raises(InvalidClientError):
        clients.authenticate_assertion(database, token_url=TOKEN_URL, assertion=client_assertion(
            rsa_key(), client_id=jwt_client, kid="rsa-1"))


def test_client_id_must_match_the_assertion(database, jwt_client):
    with pytest.raises(InvalidClientError, match="client_id does not match"):
        clients.authenticate_assertion(database, token_url=TOKEN_URL, client_id="other", assertion=client_assertion(
            rsa_key(), client_id=jwt_client, kid="rsa-1"))
