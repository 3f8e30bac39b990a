"""POST /oauth/token (client credentials: secret basic/post and private_key_jwt), its errors, JWKS, SMART discovery."""

import base64

import jwt
import pytest

from careplan.auth import clients
from tests.careplan.auth.support import TOKEN_URL, client_assertion, ec_key, public_jwk, rsa_key

FORM = "application/x-www-form-urlencoded"


def _basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _token(anonymous_client, data, headers=None):
    return anonymous_client.post("/oauth/token", data=data, headers=headers or {}, content_type=FORM)


@pytest.fixture
def ehr(database):
    new = clients.register(database, name="EHR", role="ehr", scopes="system/*.rs system/Patient.cruds")
    return new.client.client_id, new.secret


@pytest.fixture
def backend(database):
    jwks = {"keys": [public_jwk(rsa_key(), kid="rsa-1", alg="RS384"), public_jwk(ec_key(), kid="ec-1")]}
    return clients.register(database, name="Backend", role="coordinator", organization="Organization/coord",
                            scopes="system/CarePlan.cruds", jwks=jwks, with_secret=False).client.client_id


def _assert_token_response(response, scope):
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    document = response.get_json()
    assert document["token_type"] == "Bearer" and document["expires_in"] == 900
    assert document["scope"] == scope
    return document["access_token"]


def test_client_secret_basic(anonymous_client, ehr):
    token = _assert_token_response(
        _token(anonymous_client, {"grant_type": "client_credentials"}, _basic(*ehr)),
        "system/*.rs system/Patient.cruds")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == ehr[0] and claims["aud"] == "http://localhost/fhir"
    assert claims["iss"] == "http://localhost" and claims["careplan_role"] == "ehr"
    read = anonymous_client.get("/fhir/Patient/nobody", headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 404


def test_client_secret_post_with_narrower_scopes(anonymous_client, ehr):
    response = _token(anonymous_client, {"grant_type": "client_credentials", "client_id": ehr[0],
                                         "client_secret": ehr[1], "scope": "system/CarePlan.read system/Task.c"})
    token = _assert_token_response(response, "system/CarePlan.rs")
    headers = {"Authorization": f"Bearer {token}"}
    assert anonymous_client.get("/fhir/CarePlan/nothing", headers=headers).status_code == 404
    assert anonymous_client.get("/fhir/Patient/nothing", headers=headers).status_code == 403


@pytest.mark.parametrize("key, kid, alg", [(rsa_key, "rsa-1", "RS384"), (lambda: ec_key(), "ec-1", "ES384")])
def test_private_key_jwt(anonymous_client, backend, key, kid, alg):
    assertion = client_assertion(key(), client_id=backend, kid=kid, alg=alg, aud=TOKEN_URL)
    response = _token(anonymous_client, {
        "grant_type": "client_credentials", "scope": "system/CarePlan.rs",
        "client_assertion_type": clients.CLIENT_ASSERTION_TYPE, "client_assertion": assertion})
    token = _assert_token_response(response, "system/CarePlan.rs")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["careplan_organization"] == "Organization/coord" and claims["careplan_role"] == "coordinator"


def test_a_client_assertion_cannot_be_replayed(anonymous_client, backend):
    data = {"grant_type": "client_credentials", "client_assertion_type": clients.CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(rsa_key(), client_id=backend, kid="rsa-1")}
    assert _token(anonymous_client, data).status_code == 200
    replay = _token(anonymous_client, data)
    assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client"
    assert "already been used" in replay.get_json()["error_description"]


def _error(response, status, error):
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"] == error, response.get_json()
    assert response.get_json()["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    return response


def test_errors_invalid_request(anonymous_client, ehr):
    post = {"grant_type": "client_credentials", "client_id": ehr[0], "client_secret": ehr[1]}
    json_body = anonymous_client.post("/oauth/token", json=post)
    _error(json_body, 400, "invalid_request")
    _error(_token(anonymous_client, {"client_id": ehr[0], "client_secret": ehr[1]}), 400, "invalid_request")
    _error(_token(anonymous_client, "grant_type=client_credentials&grant_type=client_credentials&client_id="
                  f"{ehr[0]}&client_secret={ehr[1]}"), 400, "invalid_request")
    _error(_token(anonymous_client, post, _basic(*ehr)), 400, "invalid_request")  # two authentication methods
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "client_secret": ehr[1]}), 400,
           "invalid_request")
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "client_id": "someone-else"},
                  _basic(*ehr)), 400, "invalid_request")
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "client_assertion_type": "other",
                                     "client_assertion": "x.y.z"}), 400, "invalid_request")
    _error(_token(anonymous_client, {"grant_type": "client_credentials",
                                     "client_assertion_type": clients.CLIENT_ASSERTION_TYPE}), 400, "invalid_request")


def test_errors_invalid_client(anonymous_client, ehr, database):
    wrong_basic = _error(_token(anonymous_client, {"grant_type": "client_credentials"}, _basic(ehr[0], "wrong")),
                         401, "invalid_client")
    assert wrong_basic.headers["WWW-Authenticate"] == 'Basic realm="careplan"'
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "client_id": ehr[0],
                                     "client_secret": "wrong"}), 401, "invalid_client")
    _error(_token(anonymous_client, {"grant_type": "client_credentials"}), 401, "invalid_client")
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "client_id": ehr[0]}), 401,
           "invalid_client")
    _error(_token(anonymous_client, {"grant_type": "client_credentials"}, {"Authorization": "Basic ###"}), 401,
           "invalid_client")
    _error(_token(anonymous_client, {"grant_type": "client_credentials"}, {"Authorization": "Bearer abc"}), 401,
           "invalid_client")
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "client_assertion": "not-a-jwt",
                                     "client_assertion_type": clients.CLIENT_ASSERTION_TYPE}), 401, "invalid_client")
    clients.revoke(database, client_id=ehr[0])
    _error(_token(anonymous_client, {"grant_type": "client_credentials"}, _basic(*ehr)), 401, "invalid_client")


def test_errors_grant_type(anonymous_client, ehr, database):
    _error(_token(anonymous_client, {"grant_type": "authorization_code", "code": "x"}, _basic(*ehr)), 400,
           "unsupported_grant_type")
    _error(_token(anonymous_client, {"grant_type": "password"}), 400, "unsupported_grant_type")
    limited = clients.register(database, name="No grants", role="ehr", grant_types=())
    _error(_token(anonymous_client, {"grant_type": "client_credentials"},
                  _basic(limited.client.client_id, limited.secret)), 400, "unauthorized_client")


def test_errors_invalid_scope(anonymous_client, ehr):
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "scope": "user/*.cruds openid"},
                  _basic(*ehr)), 400, "invalid_scope")
    _error(_token(anonymous_client, {"grant_type": "client_credentials", "scope": "system/Patient.q"},
                  _basic(*ehr)), 400, "invalid_scope")


def test_jwks_publishes_the_key_that_verifies_tokens(anonymous_client, ehr):
    token = _token(anonymous_client, {"grant_type": "client_credentials"}, _basic(*ehr)).get_json()["access_token"]
    for path in ("/oauth/jwks", "/.well-known/jwks.json"):
        published = anonymous_client.get(path).get_json()["keys"]
        key = next(k for k in published if k["kid"] == jwt.get_unverified_header(token)["kid"])
        assert "d" not in key and key["use"] == "sig" and key["alg"] == "ES256"
        claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="http://localhost/fhir")
        assert claims["sub"] == ehr[0]


def test_jwks_exists_before_any_token(anonymous_client):
    assert len(anonymous_client.get("/oauth/jwks").get_json()["keys"]) == 1


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"])
def test_smart_configuration(anonymous_client, path):
    response = anonymous_client.get(path)
    assert response.status_code == 200
    document = response.get_json()
    assert document["token_endpoint"] == "http://localhost/oauth/token"
    assert document["jwks_uri"] == "http://localhost/oauth/jwks"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic", "client_secret_post", "private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {"client-confidential-symmetric", "client-confidential-asymmetric", "permission-v2"} <= set(
        document["capabilities"])
    assert "system/*.cruds" in document["scopes_supported"] and "system/CarePlan.rs" in document["scopes_supported"]


def test_configured_issuer_audience_and_lifetime(monkeypatch, database_url, database, ehr, backend):
    from api import create_app

    monkeypatch.setenv("CAREPLAN_BASE_URL", "https://careplan.example.org/fhir")
    monkeypatch.setenv("CAREPLAN_TOKEN_LIFETIME_SECONDS", "300")
    monkeypatch.setenv("CAREPLAN_TOKEN_AUDIENCE", "urn:careplan")
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": database_url})
    client = app.test_client()
    response = _token(client, {"grant_type": "client_credentials"}, _basic(*ehr))
    assert response.get_json()["expires_in"] == 300
    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert (claims["iss"], claims["aud"]) == ("https://careplan.example.org", "urn:careplan")
    token = response.get_json()["access_token"]
    assert client.get("/fhir/Patient/x", headers={"Authorization": f"Bearer {token}"}).status_code == 404
    smart = client.get("/.well-known/smart-configuration").get_json()
    assert smart["token_endpoint"] == "https://careplan.example.org/oauth/token"
    # Behind a proxy, a client assertion names the public token endpoint as its audience.
    for audience, status in (("https://careplan.example.org/oauth/token", 200), (TOKEN_URL, 401)):
        assertion = client_assertion(rsa_key(), client_id=backend, kid="rsa-1", aud=audience)
        assert _token(client, {"grant_type": "client_credentials", "client_assertion": assertion,
                               "client_assertion_type": clients.CLIENT_ASSERTION_TYPE}).status_code == status
    app.extensions["careplan.database"].dispose()
