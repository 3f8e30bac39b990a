"""Signing keys (created on first use, rotated without downtime, retired) and careplan's access tokens."""

import base64
import json
import threading
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from careplan.auth import clients, keys, tokens
from careplan.auth.exceptions import InvalidToken
from careplan.auth.scopes import ScopeSet
from careplan.auth.tokens import TokenSettings
from careplan.models import SigningKey, utcnow

SETTINGS = TokenSettings(issuer="https://careplan.example.org", audience="https://careplan.example.org/fhir",
                         lifetime=timedelta(minutes=15))


@pytest.fixture
def client(database):
    return clients.register(database, name="Agency", role="partner", organization="Organization/agency-a",
                            scopes="system/Task.rus system/Patient.r", with_secret=False).client


def _issue(database, client, **kwargs):
    return tokens.issue_access_token(database, client=client, scopes=client.scopes, settings=SETTINGS, **kwargs)


def _verify(database, token, **kwargs):
    return tokens.verify_access_token(database, token, settings=SETTINGS, **kwargs)


def _header(token):
    return jwt.get_unverified_header(token)


def test_a_token_carries_who_what_and_for_whom(database, client):
    issued = _issue(database, client)
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert {k: claims[k] for k in ("iss", "sub", "aud", "client_id", "scope", "careplan_role",
                                   "careplan_organization")} == {
        "iss": SETTINGS.issuer, "sub": client.client_id, "aud": SETTINGS.audience, "client_id": client.client_id,
        "scope": "system/Patient.r system/Task.rus", "careplan_role": "partner",
        "careplan_organization": "Organization/agency-a"}
    assert claims["exp"] - claims["iat"] == 900 == issued.expires_in
    assert claims["jti"] == issued.jti
    assert _header(issued.access_token) == {"alg": "ES256", "kid": _header(issued.access_token)["kid"],
                                            "typ": "at+jwt"}
    principal = _verify(database, issued.access_token)
    assert (principal.subject, principal.client_id, principal.role, principal.organization, principal.kind,
            principal.issuer, principal.token_id) == (client.client_id, client.client_id, "partner",
                                                      "Organization/agency-a", "client", SETTINGS.issuer, issued.jti)
    assert principal.expires_at == issued.expires_at
    assert principal.may("Task", "ru") and not principal.may("Task", "d") and not principal.may("CarePlan", "r")


def test_the_first_key_is_made_once_even_when_asked_concurrently(database):
    kids = []
    barrier = threading.Barrier(6)

    def first_use():
        barrier.wait()
        kids.append(keys.signing_key(database).kid)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(kids)) == 1
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(SigningKey)) == 1


def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(database, client):
    before = _issue(database, client).access_token
    old_kid = _header(before)["kid"]
    new, replaced = keys.rotate(database, token_lifetime=SETTINGS.lifetime)
    assert [k.kid for k in replaced] == [old_kid] and replaced[0].status == "verifying"
    assert _verify(database, before).subject == client.client_id
    after = _issue(database, client).access_token
    assert _header(after)["kid"] == new.kid != old_kid
    assert _verify(database, after).subject == client.client_id
    assert {k["kid"] for k in keys.published_jwks(database)["keys"]} == {old_kid, new.kid}
    with database.reading() as session:
        assert session.get(SigningKey, old_kid).private_key is None  # nothing signs with it any more


def test_a_rotated_key_retires_once_its_tokens_have_expired(database, client):
    before = _issue(database, client).access_token
    old_kid = _header(before)["kid"]
    _, replaced = keys.rotate(database, token_lifetime=SETTINGS.lifetime)
    assert replaced[0].retire_after == replaced[0].rotated_out_at + SETTINGS.lifetime + keys.RETIREMENT_LEEWAY
    later = replaced[0].retire_after + timedelta(seconds=1)
    with pytest.raises(InvalidToken, match="unknown or retired"):
        _verify(database, before, now=later)
    assert old_kid not in {k["kid"] for k in keys.published_jwks(database, now=later)["keys"]}
    keys.rotate(database, token_lifetime=SETTINGS.lifetime, now=later)
    statuses = {k.kid: k.status for k in keys.list_keys(database, now=later)}
    assert statuses[old_kid] == "retired" and sorted(statuses.values()) == ["active", "retired", "verifying"]
    with database.reading() as session:
        assert session.get(SigningKey, old_kid).retired_at == replaced[0].retire_after


def test_retiring_a_compromised_key_stops_its_tokens_at_once(database, client):
    before = _issue(database, client).access_token
    keys.rotate(database, token_lifetime=SETTINGS.lifetime, retire_previous=True)
    with pytest.raises(InvalidToken, match="unknown or retired"):
        _verify(database, before)
    after = _issue(database, client).access_token
    assert keys.retire(database, kid=_header(after)["kid"]).status == "retired"
    with pytest.raises(InvalidToken):
        _verify(database, after)
    # The next token gets a fresh key.
    assert _verify(database, _issue(database, client).access_token)
    assert keys.retire(database, kid="nothing") is None


def _b64(document) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def _resigned(token, key, **header_overrides):
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key, algorithm="ES256", headers={**_header(token), **header_overrides})


@pytest.mark.parametrize("tamper, message", [
    (lambda t, k: "not.a.token", "not a well-formed JWT"),
    (lambda t, k: t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:], "signature does not verify"),
    (lambda t, k: _resigned(t, ec.generate_private_key(ec.SECP256R1())), "signature does not verify"),
    (lambda t, k: _resigned(t, ec.generate_private_key(ec.SECP256R1()), kid="attacker"), "unknown or retired"),
    (lambda t, k: _b64({"alg": "none", "kid": _header(t)["kid"], "typ": "at+jwt"}) + "." + t.split(".")[1] + ".",
     "header is not one careplan issues"),
    (lambda t, k: jwt.encode(jwt.decode(t, options={"verify_signature": False}),
                             json.dumps(keys.published_jwks(k)["keys"][0]).encode() * 2, algorithm="HS256",
                             headers={"kid": _header(t)["kid"], "typ": "at+jwt"}),
     "header is not one careplan issues"),
    (lambda t, k: _resigned(t, ec.generate_private_key(ec.SECP256R1()), typ="JWT"), "header is not one"),
    (lambda t, k: "e" * 9000, "too long"),
])
def test_forged_and_broken_tokens_are_refused(database, client, tamper, message):
    token = _issue(database, client).access_token
    with pytest.raises(InvalidToken, match=message):
        _verify(database, tamper(token, database))


def test_expired_foreign_and_misdirected_tokens_are_refused(database, client):
    expired = _issue(database, client, now=utcnow() - timedelta(hours=1)).access_token
    with pytest.raises(InvalidToken, match="expired"):
        _verify(database, expired)
    other_audience = tokens.issue_access_token(
        database, client=client, scopes=client.scopes,
        settings=TokenSettings(SETTINGS.issuer, "https://elsewhere.example/fhir", SETTINGS.lifetime)).access_token
    with pytest.raises(InvalidToken, match="another audience"):
        _verify(database, other_audience)
    other_issuer = tokens.issue_access_token(
        database, client=client, scopes=client.scopes,
        settings=TokenSettings("https://elsewhere.example", SETTINGS.audience, SETTINGS.lifetime)).access_token
    with pytest.raises(InvalidToken, match="issuer are not accepted"):
        _verify(database, other_issuer)


def test_tokens_of_a_revoked_client_stop_working(database, client):
    token = _issue(database, client).access_token
    assert _verify(database, token)
    clients.revoke(database, client_id=client.client_id)
    with pytest.raises(InvalidToken, match="revoked"):
        _verify(database, token)


def test_scopes_are_what_was_granted(database, client):
    token = tokens.issue_access_token(database, client=client, scopes=ScopeSet.parse("system/Task.r"),
                                      settings=SETTINGS).access_token
    assert str(_verify(database, token).scopes) == "system/Task.r"
