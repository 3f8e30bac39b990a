"""Load the demo data and conformance resources kept as JSON under fhir/ (idempotent)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from careplan import jsonutil
from careplan.db import Database
from careplan.store import service
from careplan.validation import validate_resource

log = logging.getLogger(__name__)
# The practice catalogue first: the demo care plan's activities name its practices. Then the measures (issue 8).
SEED_FOLDERS = ("catalogue", "examples", "measures")


@dataclass
class SeedSummary:
    """How many seed resources were created, changed, or already as shipped."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def resources_in(fhir_dir: Path):
    """Yield every resource in the seed folders (single resources or collection Bundles), in file order."""
    for folder in SEED_FOLDERS:
        for path in sorted((fhir_dir / folder).glob("*.json")):
            document = jsonutil.loads(path.read_bytes())
            if document.get("resourceType") == "Bundle":
                yield from (entry["resource"] for entry in document.get("entry", []))
            else:
                yield document


def load(db: Database, fhir_dir: Path) -> SeedSummary:
    """Create or refresh every seed resource under its fixed id, all in one transaction."""
    summary = SeedSummary()
    seeds = list(resources_in(fhir_dir))
    for resource in seeds:
        validate_resource(resource)
    with db.writing() as session:
        for resource in seeds:
            result = service.update_in(session, resource=resource, resource_id=resource["id"])
            if result.created:
                summary.created += 1
            elif result.unchanged:
                summary.unchanged += 1
            else:
                summary.updated += 1
    log.info("seeded %d resources", len(seeds))
    return summary


DEMO_CLIENT_ID = "demo-admin"
DEMO_CREDENTIALS_FILE = "demo-credentials.json"


@dataclass(frozen=True)
class DemoCredential:
    """The demo admin client's credential and what seeding did to it (created, rotated, kept or revoked)."""

    client_id: str
    secret: str | None
    action: str
    path: Path


def ensure_demo_client(db: Database, instance_dir: Path) -> DemoCredential:
    """Make sure the demo admin client exists with a secret saved in instance_dir/demo-credentials.json.

    The secret is kept only as a hash, so when the saved one no longer matches (another database, a lost file) the
    client gets a fresh secret. A demo client an operator revoked stays revoked.
    """
    from careplan.auth import clients
    from careplan.auth.exceptions import UnknownClient

    path = instance_dir / DEMO_CREDENTIALS_FILE
    saved = _saved_secret(path)
    try:
        existing = clients.get(db, DEMO_CLIENT_ID)
    except UnknownClient:
        new = clients.register(db, client_id=DEMO_CLIENT_ID, name="Demo administrator (revoke in production)",
                               role="admin", scopes="system/*.cruds")
        secret, action = new.secret, "created"
    else:
        if existing.revoked:
            return DemoCredential(DEMO_CLIENT_ID, None, "revoked", path)
        if saved is not None and clients.secret_matches(db, client_id=DEMO_CLIENT_ID, secret=saved):
            return DemoCredential(DEMO_CLIENT_ID, saved, "kept", path)
        secret, action = clients.rotate_secret(db, client_id=DEMO_CLIENT_ID), "rotated"
    _write_private(path, jsonutil.dumps({"client_id": DEMO_CLIENT_ID, "client_secret": secret,
                                         "scope": "system/*.cruds"}, pretty=True) + "\n")
    return DemoCredential(DEMO_CLIENT_ID, secret, action, path)


def _saved_secret(path: Path) -> str | None:
    try:
        document = jsonutil.loads(path.read_bytes())
    except (OSError, jsonutil.JSONSyntaxError):
        return None
    if not isinstance(document, dict) or document.get("client_id") != DEMO_CLIENT_ID:
        return None
    secret = document.get("client_secret")
    return secret if isinstance(secret, str) else None


def _write_private(path: Path, text: str) -> None:
    # Readable by the owner only, and replaced in one step so a reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(partial, 0o600)
    os.replace(partial, path)
