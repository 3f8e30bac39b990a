"""careplan clients create|list|revoke|rotate-secret, careplan keys rotate|list, and the demo client of seed."""

import json
import stat

import pytest
from click.testing import CliRunner

from careplan import migrations
from careplan.auth import clients, keys
from careplan.auth.exceptions import InvalidClientError
from careplan.cli import main
from careplan.db import Database
from tests.careplan.auth.support import public_jwk, rsa_key


@pytest.fixture
def cli(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    migrations.upgrade(url)
    env = {"CAREPLAN_DATABASE_URL": url, "CAREPLAN_INSTANCE_DIR": str(tmp_path / "instance")}
    database = Database(url)

    def run(*args, code=0):
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    run.database = database
    run.instance = tmp_path / "instance"
    yield run
    database.dispose()


def test_create_prints_the_secret_once_and_keeps_a_hash(cli):
    output = cli("clients", "create", "--name", "Harbour Shelter", "--role", "partner",
                 "--organization", "Organization/shelter", "--scopes", "system/Task.rus, system/Patient.r")
    lines = dict(line.split("=", 1) for line in output.splitlines() if line.startswith("client_"))
    assert "shown only this once" in output
    client = clients.authenticate_secret(cli.database, client_id=lines["client_id"],
                                         secret=lines["client_secret"], basic=False)
    assert (client.role, client.organization, str(client.scopes)) == (
        "partner", "Organization/shelter", "system/Patient.r system/Task.rus")
    listed = cli("clients", "list")
    assert lines["client_id"] in listed and "Harbour Shelter" in listed and lines["client_secret"] not in listed
    assert lines["client_secret"] not in cli("clients", "list", "--json")


def test_create_as_json_with_default_scopes(cli):
    created = json.loads(cli("clients", "create", "--name", "EHR", "--role", "ehr", "--json"))
    assert created["scope"] == "system/*.cruds" and created["role"] == "ehr" and created["organization"] is None
    assert created["token_endpoint_auth_methods"] == ["client_secret_basic", "client_secret_post"]
    assert clients.secret_matches(cli.database, client_id=created["client_id"], secret=created["client_secret"])
    listed = json.loads(cli("clients", "list", "--json"))
    assert [c["client_id"] for c in listed] == [created["client_id"]] and listed[0]["status"] == "active"
    assert "client_secret" not in listed[0]


def test_create_with_a_jwks_file_gets_no_secret(cli, tmp_path):
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk(rsa_key(), kid="k1", alg="RS384")]}))
    created = json.loads(cli("clients", "create", "--name", "Backend", "--role", "ehr", "--jwks-file",
                             str(jwks_file), "--json"))
    assert created["client_secret"] is None and created["token_endpoint_auth_methods"] == ["private_key_jwt"]
    jwks_file.write_text("{broken")
    assert "is not JSON" in cli("clients", "create", "--name", "B", "--role", "ehr", "--jwks-file", str(jwks_file),
                                code=2)


@pytest.mark.parametrize("args, message", [
    (["--role", "partner"], "--organization"),
    (["--role", "boss"], "Invalid value for '--role'"),
    (["--role", "admin", "--scopes", "system/Patient.x"], "malformed scope"),
])
def test_create_refuses_bad_registrations(cli, args, message):
    assert message in cli("clients", "create", "--name", "X", *args, code=2)


def test_revoke_and_rotate_secret(cli):
    created = json.loads(cli("clients", "create", "--name", "EHR", "--role", "ehr", "--json"))
    rotated = dict(line.split("=", 1) for line in cli("clients", "rotate-secret", created["client_id"]).splitlines())
    assert not clients.secret_matches(cli.database, client_id=created["client_id"], secret=created["client_secret"])
    assert clients.secret_matches(cli.database, client_id=created["client_id"], secret=rotated["client_secret"])
    assert cli("clients", "revoke", created["client_id"]).strip() == f"revoked {created['client_id']}"
    with pytest.raises(InvalidClientError):
        clients.authenticate_secret(cli.database, client_id=created["client_id"], secret=rotated["client_secret"],
                                    basic=True)
    assert "revoked" in cli("clients", "list")
    assert "no client 'nobody'" in cli("clients", "revoke", "nobody", code=1)
    assert "no client 'nobody'" in cli("clients", "rotate-secret", "nobody", code=1)


def test_keys_rotate_and_list(cli):
    assert "no signing key yet" in cli("keys", "list")
    first = keys.signing_key(cli.database).kid
    output = cli("keys", "rotate")
    assert f"replaced key {first}: verifies until" in output
    new_kid = output.split()[2]
    assert keys.signing_key(cli.database).kid == new_kid != first
    listed = cli("keys", "list")
    assert f"{new_kid}  ES256  active" in listed and f"{first}  ES256  verifying until" in listed
    assert f"replaced key {new_kid}: retired now" in cli("keys", "rotate", "--retire-previous")


def test_commands_need_a_migrated_database(tmp_path):
    result = CliRunner().invoke(main, ["clients", "list"],
                                env={"CAREPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite3'}"})
    assert result.exit_code == 1 and "careplan db upgrade" in result.output


def _saved(cli):
    path = cli.instance / "demo-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())


def test_seed_creates_keeps_and_renews_the_demo_credential(cli):
    output = cli("seed", "--no-demo-data", "--url", "http://127.0.0.1:9000")
    saved = _saved(cli)
    assert saved["client_id"] == "demo-admin"
    assert f"client_secret={saved['client_secret']}" in output and "created" in output
    assert f"curl -s -u 'demo-admin:{saved['client_secret']}' -d grant_type=client_credentials " \
           "http://127.0.0.1:9000/oauth/token" in output
    assert 'curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:9000/fhir/CarePlan/demo-care-plan' in output
    assert clients.secret_matches(cli.database, client_id="demo-admin", secret=saved["client_secret"])
    again = cli("seed", "--no-demo-data")
    assert "kept" in again and saved["client_secret"] in again and "http://127.0.0.1:8000/oauth/token" in again
    (cli.instance / "demo-credentials.json").unlink()
    renewed = cli("seed", "--no-demo-data")
    fresh = _saved(cli)["client_secret"]
    assert "rotated" in renewed and fresh != saved["client_secret"]
    assert not clients.secret_matches(cli.database, client_id="demo-admin", secret=saved["client_secret"])
    assert clients.secret_matches(cli.database, client_id="demo-admin", secret=fresh)


def test_seed_leaves_a_revoked_demo_client_revoked(cli):
    cli("seed", "--no-demo-data")
    cli("clients", "revoke", "demo-admin")
    assert "demo client demo-admin is revoked" in cli("seed", "--no-demo-data")
    assert clients.get(cli.database, "demo-admin").revoked


def test_seed_without_the_demo_client(cli):
    assert "demo" not in cli("seed", "--no-demo-data", "--no-demo-client")
    assert not (cli.instance / "demo-credentials.json").exists()
    assert clients.list_clients(cli.database) == []
