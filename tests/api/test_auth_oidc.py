"""People's tokens from a configured OpenID Connect issuer: a real issuer on 127.0.0.1 with keys made in the test."""

import json

import pytest
from flask import jsonify

from api import create_app
from api.auth import current_principal
from careplan.auth import scopes as smart_scopes
from tests.careplan.auth.support import LocalIssuer, rsa_key


@pytest.fixture
def issuer():
    local = LocalIssuer()
    yield local
    local.close()


def _app(monkeypatch, database_url, issuer, **overrides):
    monkeypatch.setitem(smart_scopes.API_V1_RULES, "whoami", smart_scopes.Rule("", "none"))
    config = {"issuer": issuer.url, "audience": "careplan", "role_claim": "roles", "organization_claim": "org",
              "default_scopes": "user/*.rs", "jwks_min_refetch_seconds": 0, **overrides}
    monkeypatch.setenv("CAREPLAN_OIDC_ISSUERS", json.dumps([config]))
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": database_url})

    def whoami():
        principal = current_principal()
        return jsonify(subject=principal.subject, role=principal.role, organization=principal.organization,
                       scopes=str(principal.scopes), kind=principal.kind, issuer=principal.issuer,
                       token_id=principal.token_id, client_id=principal.client_id)

    app.add_url_rule("/api/v1/whoami", "whoami", whoami)
    return app


@pytest.fixture
def oidc_app(monkeypatch, database_url, issuer):
    app = _app(monkeypatch, database_url, issuer)
    yield app
    app.extensions["careplan.database"].dispose()


def _get(app, path, token):
    return app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})


def test_a_person_signs_in_with_the_organisations_issuer(oidc_app, issuer):
    token = issuer.token(roles=["staff", "coordinator"], org="coord-1", azp="careplan-web")
    assert _get(oidc_app, "/fhir/Patient/nobody", token).status_code == 404
    answer = _get(oidc_app, "/api/v1/whoami", token).get_json()
    assert answer == {"subject": "person-1", "role": "coordinator", "organization": "Organization/coord-1",
                      "scopes": "user/*.rs", "kind": "user", "issuer": issuer.url, "client_id": "careplan-web",
                      "token_id": answer["token_id"]}
    assert issuer.hits == {"discovery": 1, "jwks": 1}  # discovered once, keys cached


def test_scopes_in_the_token_win_over_the_defaults(oidc_app, issuer):
    token = issuer.token(roles="coordinator", scope="openid profile user/CarePlan.rs")
    assert _get(oidc_app, "/fhir/CarePlan/nothing", token).status_code == 404
    refused = _get(oidc_app, "/fhir/Patient/nothing", token)
    assert refused.status_code == 403 and 'scope="user/Patient.r"' in refused.headers["WWW-Authenticate"]


def test_keys_rotated_at_the_issuer_are_fetched_again(oidc_app, issuer):
    assert _get(oidc_app, "/fhir/Patient/x", issuer.token(roles="coordinator")).status_code == 404
    old_token = issuer.token(roles="coordinator")
    issuer.rotate()
    assert _get(oidc_app, "/fhir/Patient/x", issuer.token(roles="coordinator")).status_code == 404
    assert issuer.hits["jwks"] == 2
    # The old key is gone from the issuer's JWKS, so its tokens are refused.
    assert _get(oidc_app, "/fhir/Patient/x", old_token).status_code == 401


def test_unknown_kids_do_not_make_careplan_hammer_the_issuer(monkeypatch, database_url, issuer):
    app = _app(monkeypatch, database_url, issuer, jwks_min_refetch_seconds=60)
    assert _get(app, "/fhir/Patient/x", issuer.token(roles="coordinator")).status_code == 404
    issuer.rotate()
    for _ in range(3):
        refused = _get(app, "/fhir/Patient/x", issuer.token(roles="coordinator"))
        assert refused.status_code == 401 and "not among" in refused.headers["WWW-Authenticate"]
    assert issuer.hits["jwks"] == 1
    app.extensions["careplan.database"].dispose()


def test_cached_keys_outlive_an_issuer_outage(monkeypatch, database_url, issuer):
    app = _app(monkeypatch, database_url, issuer, jwks_cache_seconds=0)
    token = issuer.token(roles="partner", org="agency-a")
    assert _get(app, "/fhir/Patient/x", token).status_code == 404
    issuer.close()
    assert _get(app, "/fhir/Patient/x", token).status_code == 404
    app.extensions["careplan.database"].dispose()


def test_an_unreachable_issuer_means_no_sign_in(monkeypatch, database_url, issuer):
    app = _app(monkeypatch, database_url, issuer)
    token = issuer.token(roles="coordinator")
    issuer.close()
    refused = _get(app, "/fhir/Patient/x", token)
    assert refused.status_code == 401 and "could not be fetched" in refused.headers["WWW-Authenticate"]
    app.extensions["careplan.database"].dispose()


@pytest.mark.parametrize("make, message", [
    (lambda i: i.token(roles="coordinator", expires_in=-120), "expired"),
    (lambda i: i.token(roles="coordinator", audience="another-app"), "another audience"),
    (lambda i: i.token(roles="coordinator", key=rsa_key("not the issuer's")), "signature does not verify"),
    (lambda i: i.token(roles="admin"), "may not grant the admin role"),
    (lambda i: i.token(), "no careplan role"),
    (lambda i: i.token(roles=["coordinator", "partner"], org="a"), "more than one careplan role"),
    (lambda i: i.token(roles="partner"), "partner token must name the organization"),
    (lambda i: i.token(roles="coordinator", org={"id": "x"}), "organization claim"),
    (lambda i: i.token(roles="coordinator", iat=None), "iat"),
])
def test_unacceptable_person_tokens_are_refused(oidc_app, issuer, make, message):
    refused = _get(oidc_app, "/fhir/Patient/x", make(issuer))
    assert refused.status_code == 401
    assert message in refused.headers["WWW-Authenticate"], refused.headers["WWW-Authenticate"]


def test_tokens_from_unconfigured_issuers_are_refused(oidc_app, issuer):
    stranger = LocalIssuer()
    try:
        refused = _get(oidc_app, "/fhir/Patient/x", stranger.token(roles="coordinator", audience="careplan"))
    finally:
        stranger.close()
    assert refused.status_code == 401 and "issuer are not accepted" in refused.headers["WWW-Authenticate"]


def test_an_issuer_can_be_bound_to_one_organisation_and_map_its_roles(monkeypatch, database_url, issuer):
    app = _app(monkeypatch, database_url, issuer, jwks_uri=f"{issuer.url}/keys", organization="Organization/agency",
               role_claim="realm_access.roles", role_map={"agency-staff": "partner"}, organization_claim="org")
    token = issuer.token(realm_access={"roles": ["offline_access", "agency-staff"]})
    answer = _get(app, "/api/v1/whoami", token).get_json()
    assert (answer["role"], answer["organization"]) == ("partner", "Organization/agency")
    assert issuer.hits["discovery"] == 0  # jwks_uri configured: no discovery
    other = _get(app, "/fhir/Patient/x", issuer.token(realm_access={"roles": ["agency-staff"]}, org="elsewhere"))
    assert other.status_code == 401 and "may only sign in people of" in other.headers["WWW-Authenticate"]
    app.extensions["careplan.database"].dispose()
