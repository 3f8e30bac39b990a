"""The careplan command line: db upgrade and seed are idempotent."""

from click.testing import CliRunner
from sqlalchemy import func, select

from careplan import migrations
from careplan.cli import main
from careplan.db import Database
from careplan.models import Resource


def test_db_upgrade_and_seed_are_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    runner = CliRunner()
    env = {"CAREPLAN_DATABASE_URL": url}
    for _ in range(2):
        result = runner.invoke(main, ["db", "upgrade"], env=env)
        assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["db", "current"], env=env).output.strip() == migrations.head_revision(url)
    first = runner.invoke(main, ["seed", "--no-demo-data"], env=env)
    assert first.exit_code == 0 and "0 unchanged" in first.output
    second = runner.invoke(main, ["seed", "--no-demo-data"], env=env)
    assert "0 created, 0 updated" in second.output
    database = Database(url)
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(Resource)) > 5
        plan = session.scalars(select(Resource).where(Resource.res_id == "demo-care-plan")).one()
        assert plan.version_id == 1
    database.dispose()


def test_serve_refuses_an_unmigrated_database(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--port", "1"],
                                env={"CAREPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite3'}"})
    assert result.exit_code == 1
    assert "careplan db upgrade" in result.output
