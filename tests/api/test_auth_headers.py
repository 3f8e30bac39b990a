"""Security headers on every response; CORS off by default and answered only for configured origins."""

import pytest
from flask.testing import FlaskClient

from api import create_app


def test_security_headers_on_data_errors_and_health(client, anonymous_client):
    for response in (client.get("/fhir/Patient/nobody"), anonymous_client.get("/fhir/Patient/nobody"),
                     anonymous_client.get("/fhir/metadata"), anonymous_client.get("/healthz"),
                     anonymous_client.post("/oauth/token")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP
        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("path", ["/fhir/metadata", "/oauth/jwks", "/.well-known/smart-configuration",
                                  "/fhir/Patient/nobody"])
def test_api_responses_are_not_stored(client, path):
    assert client.get(path).headers["Cache-Control"] == "no-store"


def test_health_checks_may_be_cached_by_nobody_in_particular(client):
    assert "Cache-Control" not in client.get("/healthz").headers


def test_hsts_over_https(client):
    response = client.get("/fhir/metadata", base_url="https://careplan.example.org")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_cors_is_off_by_default(client, anonymous_client):
    preflight = anonymous_client.options("/fhir/Patient", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert preflight.status_code == 401  # a preflight is no way around authentication
    assert "Access-Control-Allow-Origin" not in client.get("/fhir/metadata",
                                                           headers={"Origin": "https://app.example"}).headers


@pytest.fixture
def cors_app(monkeypatch, database_url):
    from tests.conftest import AuthenticatedClient

    monkeypatch.setenv("CAREPLAN_CORS_ORIGINS", "https://app.example, https://other.example/")
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": database_url})
    app.test_client_class = AuthenticatedClient
    yield app
    app.extensions["careplan.database"].dispose()


def test_preflight_for_a_configured_origin(cors_app):
    preflight = FlaskClient(cors_app, cors_app.response_class).options("/fhir/Patient", headers={
        "Origin": "https://other.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type, X-Evil"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://other.example"
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Origin" in preflight.headers["Vary"]


def test_preflight_for_another_origin_gets_nothing(cors_app):
    preflight = FlaskClient(cors_app, cors_app.response_class).options("/fhir/Patient", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers and preflight.status_code == 401


def test_cors_headers_on_responses_for_configured_origins_only(cors_app):
    client = cors_app.test_client()
    allowed = client.get("/fhir/Patient/nobody", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "WWW-Authenticate" in allowed.headers["Access-Control-Expose-Headers"]
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Origin" in allowed.headers["Vary"]
    refused = client.get("/fhir/Patient/nobody", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers and "Origin" in refused.headers["Vary"]
