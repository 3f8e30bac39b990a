"""The careplan command line: database migrations, demo data, and the production web server."""

from __future__ import annotations

import sys
from pathlib import Path

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
@click.option("--demo-client/--no-demo-client", default=True, show_default=True,
              help="Also make sure the demo admin client exists and print its credential.")
@click.option("--demo-data/--no-demo-data", default=True, show_default=True,
              help="Also load synthetic patients, care plans, referrals and admissions of the last 26 weeks "
              "(careplan/demo.py; skip it in production).")
@click.option("--url", default=None, help="Server root for the printed curl commands [default: from "
              "CAREPLAN_BASE_URL, else http://127.0.0.1:8000].")
def seed(demo_client: bool, demo_data: bool, url: str | None) -> None:
    """Load the conformance artifacts and demo data (safe to run again)."""
    from careplan import demo, seeding
    from careplan.db import Database

    settings = careplan_config.from_env()
    database = Database(settings.database_url)
    try:
        summary = seeding.load(database, settings.fhir_dir)
        loaded = demo.load(database) if demo_data else None
        credential = seeding.ensure_demo_client(database, settings.instance_dir) if demo_client else None
        users = demo.ensure_demo_users(database, settings.instance_dir) if demo_client and demo_data else []
    finally:
        database.dispose()
    click.echo(f"seed: {summary.created} created, {summary.updated} updated, {summary.unchanged} unchanged")
    if loaded is not None:
        click.echo(f"demo data: {loaded.patients} synthetic patients, {loaded.referrals} referrals, "
                   f"{loaded.resources} resources in {loaded.versions} versions over the last {demo.WEEKS} weeks"
                   if loaded.loaded else "demo data: already loaded, nothing added")
    if credential is not None:
        _echo_demo_credential(credential, url or _server_root(settings))
    for user in users:
        _echo_demo_user(user, url or _server_root(settings))


def _echo_demo_user(credential, root: str) -> None:
    if credential.secret is None:
        click.echo(f"demo client {credential.client_id} is revoked")
        return
    what = {"demo-coordinator": ("coordinator, acts as Practitioner/demo-coordinator", "/api/v1/worklist"),
            "demo-partner": ("partner, Organization/demo-housing-first", "/api/v1/partner/referrals")}
    role, path = what.get(credential.client_id, ("", "/api/v1/inbox"))
    click.echo(f"demo client {credential.client_id} ({role}; {credential.action}): "
               f"client_secret={credential.secret}  (try {root}{path})")


def _server_root(settings) -> str:
    base = (settings.base_url or "").rstrip("/")
    return base[: -len("/fhir")] if base.endswith("/fhir") else "http://127.0.0.1:8000"


def _echo_demo_credential(credential, root: str) -> None:
    if credential.secret is None:
        click.echo(f"demo client {credential.client_id} is revoked: no demo credential (register a client with "
                   "`careplan clients create`)")
        return
    click.echo(f"demo client {credential.client_id} (admin, system/*.cruds; {credential.action}), secret saved in "
               f"{credential.path}:\n  client_id={credential.client_id}\n  client_secret={credential.secret}\n"
               "Try the API (revoke this client in production: careplan clients revoke demo-admin):")
    click.echo(f"  TOKEN=$(curl -s -u '{credential.client_id}:{credential.secret}' -d grant_type=client_credentials "
               f"{root}/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')")
    click.echo(f'  curl -s -H "Authorization: Bearer $TOKEN" {root}/fhir/CarePlan/demo-care-plan '
               "| python3 -m json.tool")


@main.group("clients")
def clients_group() -> None:
    """Register, list and revoke the OAuth clients that may call the API."""


@clients_group.command("create")
@click.option("--name", required=True, help="Who the client is, e.g. the agency or system name.")
@click.option("--role", required=True, type=click.Choice(["admin", "coordinator", "partner", "ehr", "lead"]))
@click.option("--organization", default=None, help="Organization/<id> the client acts for (partners need one).")
@click.option("--scopes", multiple=True, help="SMART scopes, space- or comma-separated, e.g. 'system/CarePlan.rs' "
              "(repeatable) [default: by role].")
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JWK Set of the client's public keys: it authenticates with signed assertions (private_key_jwt) "
              "and gets no secret.")
@click.option("--json", "as_json", is_flag=True, help="Print the registration as JSON.")
def clients_create(name: str, role: str, organization: str | None, scopes: tuple[str, ...], jwks_file: Path | None,
                   as_json: bool) -> None:
    """Register a client and print its id and secret (shown this once: careplan keeps only a hash)."""
    import json

    from careplan.auth import clients
    from careplan.auth.exceptions import RegistrationError

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"{jwks_file} is not JSON: {exc}") from None
    scope_text = " ".join(" ".join(scopes).replace(",", " ").split()) or None
    database = _migrated_database()
    try:
        new = clients.register(database, name=name, role=role, organization=organization, scopes=scope_text,
                               jwks=jwks, with_secret=jwks is None)
    except RegistrationError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        database.dispose()
    client = new.client
    if as_json:
        click.echo(json.dumps({"client_id": client.client_id, "client_secret": new.secret, "name": client.name,
                               "role": client.role, "organization": client.organization, "scope": str(client.scopes),
                               "token_endpoint_auth_methods": list(client.auth_methods)}, indent=2))
        return
    click.echo(f"client_id={client.client_id}")
    if new.secret is not None:
        click.echo(f"client_secret={new.secret}")
        click.echo("The secret is shown only this once: careplan keeps a hash of it.")
    click.echo(f"role={client.role} organization={client.organization or '-'} scope={client.scopes}")
    click.echo(f"authenticates with: {', '.join(client.auth_methods)}")


@clients_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the clients as JSON.")
def clients_list(as_json: bool) -> None:
    """List the registered clients (never their secrets)."""
    import json

    from careplan.auth import clients

    database = _migrated_database()
    try:
        registered = clients.list_clients(database)
    finally:
        database.dispose()
    rows = [{"client_id": c.client_id, "name": c.name, "role": c.role, "organization": c.organization,
             "scope": str(c.scopes), "status": "revoked" if c.revoked else "active",
             "token_endpoint_auth_methods": list(c.auth_methods), "created": c.created_at.isoformat()}
            for c in registered]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['client_id']}  {row['status']}  {row['role']}  {row['organization'] or '-'}  "
                   f"{row['name']}  [{row['scope']}]")
    if not rows:
        click.echo("no clients registered")


@clients_group.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Revoke a client: no new tokens, and the tokens it holds stop working at once."""
    from careplan.auth import clients
    from careplan.auth.exceptions import UnknownClient

    database = _migrated_database()
    try:
        clients.revoke(database, client_id=client_id)
    except UnknownClient:
        click.echo(f"no client {client_id!r} is registered", err=True)
        sys.exit(1)
    finally:
        database.dispose()
    click.echo(f"revoked {client_id}")


@clients_group.command("rotate-secret")
@click.argument("client_id")
def clients_rotate_secret(client_id: str) -> None:
    """Give a client a new secret (printed once); the old one stops working."""
    from careplan.auth import clients
    from careplan.auth.exceptions import UnknownClient

    database = _migrated_database()
    try:
        secret = clients.rotate_secret(database, client_id=client_id)
    except UnknownClient:
        click.echo(f"no client {client_id!r} is registered", err=True)
        sys.exit(1)
    finally:
        database.dispose()
    click.echo(f"client_id={client_id}\nclient_secret={secret}")


@main.group("keys")
def keys_group() -> None:
    """Manage the keys that sign access tokens."""


@keys_group.command("rotate")
@click.option("--retire-previous", is_flag=True,
              help="Retire the replaced key at once (it was compromised): every token it signed stops working.")
def keys_rotate(retire_previous: bool) -> None:
    """Make a new signing key; the old one still verifies the tokens it signed until they expire."""
    from datetime import timedelta

    from careplan.auth import keys

    settings = careplan_config.from_env()
    database = _migrated_database()
    try:
        new, replaced = keys.rotate(database, token_lifetime=timedelta(seconds=settings.token_lifetime_seconds),
                                    retire_previous=retire_previous)
    finally:
        database.dispose()
    click.echo(f"active key {new.kid} ({new.algorithm})")
    for old in replaced:
        until = "retired now" if old.status == "retired" else f"verifies until {old.retire_after.isoformat()}"
        click.echo(f"replaced key {old.kid}: {until}")


@keys_group.command("list")
def keys_list() -> None:
    """List the signing keys and their status (active, verifying, retired)."""
    from careplan.auth import keys

    database = _migrated_database()
    try:
        found = keys.list_keys(database)
    finally:
        database.dispose()
    for key in found:
        until = f" until {key.retire_after.isoformat()}" if key.status == "verifying" else ""
        click.echo(f"{key.kid}  {key.algorithm}  {key.status}{until}  created {key.created_at.isoformat()}")
    if not found:
        click.echo("no signing key yet: one is made when the first token is issued")


def _migrated_database():
    from careplan.db import Database

    settings = careplan_config.from_env()
    if _current_revision(settings.database_url) != migrations.head_revision(settings.database_url):
        click.echo("the database is not migrated: run `careplan db upgrade` first", err=True)
        sys.exit(1)
    return Database(settings.database_url)


@main.group("audit")
def audit_group() -> None:
    """Report on the audit trail."""


@audit_group.command("break-glass")
@click.option("--since", default=None, help="FHIR date or instant [default: 30 days ago].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def audit_break_glass(since: str | None, as_json: bool) -> None:
    """List every break-glass access with who, when, whose data and the justification given."""
    import dataclasses
    import json
    from datetime import timedelta

    from careplan.models import utcnow
    from careplan.search.dates import parse_range
    from careplan.security import reports

    try:
        start = parse_range(since)[0] if since else utcnow() - timedelta(days=30)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    database = _migrated_database()
    try:
        with database.reading() as session:
            accesses = reports.break_glass(session, since=start)
    finally:
        database.dispose()
    for access in accesses:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(access)))
        else:
            click.echo(f"{access.recorded}  {access.who} ({access.organization or '-'})  {access.action}/{access.outcome}"
                       f"  {', '.join(access.patients) or '-'}  {access.justification or '(no justification)'}")
    if not as_json:
        click.echo(f"{len(accesses)} break-glass access(es) since {start.isoformat()}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per worker.")
@click.option("--scheduler/--no-scheduler", "run_scheduler", default=True, show_default=True,
              help="Run the reminder scheduler inside the server's workers (off when `careplan scheduler` runs).")
def serve(host: str, port: int, workers: int, threads: int, run_scheduler: bool) -> None:
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
            # gunicorn's control socket sits at one fixed path per user: two instances on a host would share it.
            self.cfg.set("control_socket_disable", True)
            if run_scheduler:
                # Each worker runs its own clock, started after the fork (threads do not survive fork); several
                # pollers are safe because the claim is atomic.
                self.cfg.set("post_worker_init", _start_clock)
                self.cfg.set("worker_exit", _stop_clock)

        def load(self):
            from api import create_app

            return create_app()

    click.echo(f"careplan listening on http://{host}:{port} (FHIR at /fhir, health at /healthz)"
               + ("; reminder scheduler on" if run_scheduler else ""))
    Server().run()


_clock: dict = {}


def _start_clock(_worker) -> None:
    from careplan.db import Database
    from scheduler import clock

    _clock["database"] = database = Database(careplan_config.from_env().database_url)
    _clock["clock"] = clock.start_background(database, careplan_config.from_env())


def _stop_clock(_server, _worker) -> None:
    if "clock" in _clock:
        _clock.pop("clock").stop()
        _clock.pop("database").dispose()


@main.command("scheduler")
@click.option("--once", is_flag=True, help="Run a single tick, print a summary line and exit.")
def scheduler_command(once: bool) -> None:
    """Send due reminders: run the scheduler clock as its own process until SIGTERM or SIGINT."""
    import logging

    from careplan.db import Database
    from scheduler import clock, worker

    settings = careplan_config.from_env()
    if _current_revision(settings.database_url) != migrations.head_revision(settings.database_url):
        click.echo("the database is not migrated: run `careplan db upgrade` first", err=True)
        sys.exit(1)
    database = Database(settings.database_url)
    try:
        if once:
            summary = worker.tick(database, settings=settings)
            click.echo(summary.line())
            sys.exit(1 if summary.errors else 0)
        click.echo(f"careplan scheduler: a tick every {settings.scheduler_interval_seconds:g} s "
                   "(stop with SIGTERM or Ctrl-C)")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: maximum number of running instances" is by design
        clock.run_blocking(database, settings)
    finally:
        database.dispose()


@main.group("deliveries")
def deliveries_group() -> None:
    """Inspect and requeue reminder deliveries (the outbox)."""


@deliveries_group.command("dead")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
def deliveries_dead(limit: int) -> None:
    """List dead-lettered deliveries, newest first."""
    from careplan.db import Database
    from scheduler import deadletter

    database = Database(careplan_config.from_env().database_url)
    try:
        dead = deadletter.list_dead(database, limit=limit)
        total = deadletter.count_dead(database)
    finally:
        database.dispose()
    for delivery in dead:
        click.echo(f"{delivery.id}\t{delivery.channel}\t{delivery.recipient}\t{delivery.attempts} attempts\t"
                   f"{delivery.idempotency_key}\t{delivery.last_error or ''}")
    click.echo(f"{total} dead deliveries" + (f" (showing {len(dead)})" if total > len(dead) else ""))


@deliveries_group.command("requeue")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead delivery.")
def deliveries_requeue(ids: tuple[int, ...], everything: bool) -> None:
    """Put dead deliveries back in the queue with a fresh retry window."""
    from careplan.db import Database
    from scheduler import deadletter

    if bool(ids) == everything:
        raise click.UsageError("give delivery ids or --all (not both)")
    database = Database(careplan_config.from_env().database_url)
    try:
        count = deadletter.requeue(database, ids=None if everything else ids)
    finally:
        database.dispose()
    click.echo(f"{count} deliveries requeued")


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1),
              help="NDJSON lines per transaction; batch Bundle entries between saves of the resume state.")
@click.option("--skip-unsupported", is_flag=True,
              help="Leave out entries of resource types careplan does not store (references to them stay as sent).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where resume state is kept [default: instance/import-state].")
def import_(files: tuple[Path, ...], batch_size: int, skip_unsupported: bool, state_dir: Path | None) -> None:
    """Load transaction or batch Bundles (JSON) and NDJSON files (one resource a line); safe to run again."""
    from careplan import importer
    from careplan.db import Database

    settings = careplan_config.from_env()
    if _current_revision(settings.database_url) != migrations.head_revision(settings.database_url):
        click.echo("the database is not migrated: run `careplan db upgrade` first", err=True)
        sys.exit(1)
    bar = _ProgressBars()
    database = Database(settings.database_url)
    loader = importer.Importer(database, batch_size=batch_size, skip_unsupported=skip_unsupported,
                               state_dir=state_dir or importer.DEFAULT_STATE_DIR, on_file=bar.start,
                               progress=bar.advance, on_failure=lambda f: bar.note(f"failed: {f.describe()}"))
    try:
        summary = loader.run(list(files))
    except KeyboardInterrupt:
        bar.close()
        click.echo("import interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    finally:
        bar.close()
        database.dispose()
    done = f", {summary.files_already_done} already imported" if summary.files_already_done else ""
    click.echo(f"import: {summary.files} files{done}: {summary.created} created, {summary.updated} updated, "
               f"{summary.unchanged} unchanged, {summary.failed} failed, {summary.skipped} skipped (unsupported type); "
               f"{summary.written} resources in {summary.seconds:.1f} s ({summary.per_second:.0f} resources/s)")
    if summary.failed:
        sys.exit(1)


class _ProgressBars:
    """One progress bar per file on stderr, with failures printed above it."""

    def __init__(self):
        self.bar = None

    def start(self, name: str, total: int) -> None:
        self.close()
        self.bar = click.progressbar(length=max(total, 1), label=name, file=sys.stderr, show_pos=True)
        self.bar.__enter__()

    def advance(self, steps: int) -> None:
        if self.bar is not None and steps > 0:
            self.bar.update(steps)

    def note(self, message: str) -> None:
        click.echo(("\n" if self.bar is not None else "") + message, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _current_revision(url: str) -> str | None:
    from careplan.db import Database

    database = Database(url)
    try:
        return migrations.current_revision(database.engine)
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
