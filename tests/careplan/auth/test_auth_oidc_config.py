"""CAREPLAN_OIDC_ISSUERS and the other authentication settings are checked when careplan starts."""

import json
from pathlib import Path

import pytest

from careplan.auth.oidc import parse_issuers
from careplan.config import ConfigError, from_env


def test_issuers_parse_with_defaults():
    (issuer,) = parse_issuers(json.dumps([{"issuer": "https://idp.example.org/realms/agency",
                                           "audience": ["careplan", "account"]}]))
    assert issuer.audience == ("careplan", "account")
    assert issuer.allowed_roles == ("coordinator", "partner", "lead")  # an organisation's IdP makes no admins by default
    assert issuer.role_claim == "careplan_role" and issuer.scopes_claim == "scope"
    assert parse_issuers("") == () and parse_issuers(None) == ()


@pytest.mark.parametrize("raw, message", [
    ("{not json", "not valid JSON"),
    ('{"issuer": "https://x"}', "JSON list"),
    ("[1]", "not an object"),
    ('[{"issuer": "https://x"}]', "needs issuer and audience"),
    ('[{"issuer": "https://x", "audience": "a", "roles": "x"}]', "unknown keys: roles"),
    ('[{"issuer": "http://idp.example.org", "audience": "a"}]', "https URL"),
    ('[{"issuer": "https://x", "audience": "a", "jwks_uri": "ftp://x/keys"}]', "https URL"),
    ('[{"issuer": "https://x", "audience": "a", "allowed_roles": ["root"]}]', "unknown role"),
    ('[{"issuer": "https://x", "audience": "a", "role_map": {"g": "boss"}}]', "unknown role"),
    ('[{"issuer": "https://x", "audience": "a", "organization": "agency"}]', "Organization/<id>"),
    ('[{"issuer": "https://x", "audience": "a", "default_scopes": "user/*.zz"}]', "malformed scope"),
    ('[{"issuer": "https://x", "audience": "a"}, {"issuer": "https://x", "audience": "b"}]', "twice"),
])
def test_bad_issuer_configuration_is_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_issuers(raw)


def test_loopback_issuers_may_use_http():
    assert parse_issuers('[{"issuer": "http://127.0.0.1:8080", "audience": "a"}]')[0].issuer == "http://127.0.0.1:8080"
    assert parse_issuers('[{"issuer": "http://localhost:8080", "audience": "a"}]')


def test_authentication_settings_from_the_environment(tmp_path):
    settings = from_env({})
    assert settings.token_lifetime_seconds == 900 and settings.cors_origins == ()
    assert settings.instance_dir.name == "instance" and settings.oidc_issuers == ()
    settings = from_env({"CAREPLAN_TOKEN_LIFETIME_SECONDS": "300", "CAREPLAN_CORS_ORIGINS": "https://a.example/, "
                         "https://b.example", "CAREPLAN_TOKEN_ISSUER": "https://careplan.example.org/",
                         "CAREPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    assert settings.token_lifetime_seconds == 300
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.token_issuer == "https://careplan.example.org"
    assert settings.instance_dir == tmp_path  # beside the SQLite database
    assert from_env({"CAREPLAN_INSTANCE_DIR": "/srv/careplan"}).instance_dir == Path("/srv/careplan")
    assert from_env({"CAREPLAN_DATABASE_URL": "postgresql://u@h/db"}).instance_dir.name == "instance"
    with pytest.raises(ConfigError, match="CAREPLAN_OIDC_ISSUERS"):
        from_env({"CAREPLAN_OIDC_ISSUERS": "[1]"})
    with pytest.raises(ConfigError, match="CAREPLAN_TOKEN_LIFETIME_SECONDS"):
        from_env({"CAREPLAN_TOKEN_LIFETIME_SECONDS": "0"})
