"""A programme lead is registered like any client and gets measure- and directory-sized scopes by default."""

import json

import pytest

from careplan.auth import clients, oidc
from careplan.auth.exceptions import InvalidToken
from careplan.auth.scopes import ScopeSet
from tests.careplan.auth.test_auth_cli import cli  # noqa: F401 - the fixture: the CLI on its own database


def test_careplan_clients_create_role_lead(cli):  # noqa: F811
    created = json.loads(cli("clients", "create", "--name", "Programme lead", "--role", "lead", "--json"))
    assert created["role"] == "lead" and created["organization"] is None
    scopes = ScopeSet.parse(created["scope"])
    assert str(scopes) == str(ScopeSet.parse(clients.DEFAULT_SCOPES["lead"]))
    for readable in ("Measure", "MeasureReport", "Organization", "HealthcareService", "PlanDefinition"):
        assert f"system/{readable}.rs" in created["scope"]
    assert "Patient" not in created["scope"] and "*" not in created["scope"] and ".c" not in created["scope"]
    assert clients.get(cli.database, created["client_id"]).role == "lead"


def _issuer(**overrides) -> oidc.OidcIssuer:
    [issuer] = oidc.parse_issuers(json.dumps([{"issuer": "https://login.example.org", "audience": "careplan",
                                               "role_claim": "realm_access.roles", **overrides}]))
    return issuer


def _claims(roles) -> dict:
    return {"sub": "person-1", "exp": 4102444800, "realm_access": {"roles": roles}}


def test_an_identity_providers_role_maps_to_lead():
    issuer = _issuer(role_map={"qi-programme-lead": "lead"})
    principal = oidc._principal(issuer, _claims(["staff", "qi-programme-lead"]))
    assert principal.role == "lead" and principal.kind == "user"
    assert oidc._principal(_issuer(), _claims(["lead"])).role == "lead"  # allowed by default: it sees less than
    with pytest.raises(InvalidToken, match="may not grant the lead role"):  # a coordinator, but can be switched off
        oidc._principal(_issuer(allowed_roles=["coordinator"]), _claims(["lead"]))
    with pytest.raises(InvalidToken, match="more than one careplan role"):
        oidc._principal(issuer, _claims(["coordinator", "qi-programme-lead"]))
