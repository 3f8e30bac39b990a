"""/healthz and /readyz."""

from sqlalchemy import text

from api import create_app


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_when_migrated(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["revision"]


def test_readyz_when_not_migrated(tmp_path):
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "database not migrated"


def test_readyz_when_database_unreachable():
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "database unreachable"


def test_readyz_after_downgrade_is_not_ready(app, client, database):
    with database.engine.begin() as connection:
        previous = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        assert client.get("/readyz").status_code == 503
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": previous})
