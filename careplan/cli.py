"""The careplan command line: database migrations, demo data, and the production web server."""

from __future__ import annotations

import sys

import click

from careplan import config as careplan_config
from careplan import migrations


@click.group()
def main() -> None:
    """Run and administer careplan."""


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to migrate to.")
def db_upgrade(revision: str) -> None:
    """Migrate the database to the newest schema (safe to run again)."""
    settings = careplan_config.from_env()
    migrations.upgrade(settings.database_url, revision)
    click.echo(f"database at {migrations.head_revision(settings.database_url) if revision == 'head' else revision}")


@db.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from careplan.db import Database

    database = Database(careplan_config.from_env().database_url)
    try:
        click.echo(migrations.current_revision(database.engine) or "not migrated")
    finally:
        database.dispose()


@main.command()
def seed() -> None:
    """Load the conformance artifacts and demo data (safe to run again)."""
    from careplan import seeding
    from careplan.db import Database

    settings = careplan_config.from_env()
    database = Database(settings.database_url)
    try:
        summary = seeding.load(database, settings.fhir_dir)
    finally:
        database.dispose()
    click.echo(f"seed: {summary.created} created, {summary.updated} updated, {summary.unchanged} unchanged")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API with gunicorn (production mode)."""
    from gunicorn.app.base import BaseApplication

    settings = careplan_config.from_env()
    current = _current_revision(settings.database_url)
    if current != migrations.head_revision(settings.database_url):
        click.echo("the database is not migrated: run `careplan db upgrade` first", err=True)
        sys.exit(1)

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            # Log method, path template and status only: query strings can carry identifiers.
            self.cfg.set("access_log_format", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms')

        def load(self):
            from api import create_app

            return create_app()

    click.echo(f"careplan listening on http://{host}:{port} (FHIR at /fhir, health at /healthz)")
    Server().run()


def _current_revision(url: str) -> str | None:
    from careplan.db import Database

    database = Database(url)
    try:
        return migrations.current_revision(database.engine)
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
