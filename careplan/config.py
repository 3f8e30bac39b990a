"""Read careplan's configuration from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A configuration value from the environment is not usable."""


@dataclass(frozen=True)
class Settings:
    """Settings that every part of careplan (web, CLI, scheduler) shares."""

    database_url: str
    fhir_dir: Path = PROJECT_ROOT / "fhir"
    base_url: str | None = None  # public base URL of /fhir when behind a proxy; None means "from the request"
    max_body_bytes: int = 10 * 1024 * 1024
    default_page_size: int = 50
    max_page_size: int = 1000
    database_echo: bool = False
    max_bundle_entries: int = 10000  # entries in one transaction or batch Bundle; more answers 413
    max_bundle_bytes: int = 100 * 1024 * 1024  # body limit of POST /fhir (Bundles), separate from max_body_bytes
    # Authentication (careplan.auth, api/auth.py): see README "Authentication".
    token_lifetime_seconds: int = 900  # access tokens from POST /oauth/token live 15 minutes
    token_issuer: str | None = None  # iss of careplan's tokens; None means the public root URL
    token_audience: str | None = None  # aud of careplan's tokens; None means the FHIR base URL
    oidc_issuers: tuple = ()  # careplan.auth.oidc.OidcIssuer, from CAREPLAN_OIDC_ISSUERS (JSON)
    cors_origins: tuple[str, ...] = ()  # origins allowed to call the API from a browser; empty: CORS off
    instance_dir: Path = PROJECT_ROOT / "instance"  # local files such as demo-credentials.json
    extra: dict = field(default_factory=dict)


def default_database_url(instance_dir: Path | None = None) -> str:
    """Return the embedded SQLite URL used when nothing is configured."""
    instance_dir = instance_dir or PROJECT_ROOT / "instance"
    return f"sqlite:///{instance_dir / 'careplan.sqlite3'}"


def from_env(environ: os._Environ | dict | None = None) -> Settings:
    """Map CAREPLAN_* environment variables to Settings."""
    env = os.environ if environ is None else environ
    return Settings(
        database_url=normalize_database_url(env.get("CAREPLAN_DATABASE_URL") or default_database_url()),
        fhir_dir=Path(env.get("CAREPLAN_FHIR_DIR", PROJECT_ROOT / "fhir")),
        base_url=(env.get("CAREPLAN_BASE_URL") or None),
        max_body_bytes=_int(env, "CAREPLAN_MAX_BODY_BYTES", 10 * 1024 * 1024),
        default_page_size=_int(env, "CAREPLAN_DEFAULT_PAGE_SIZE", 50),
        max_page_size=_int(env, "CAREPLAN_MAX_PAGE_SIZE", 1000),
        database_echo=env.get("CAREPLAN_DATABASE_ECHO", "").lower() in {"1", "true", "yes"},
        max_bundle_entries=_int(env, "CAREPLAN_MAX_BUNDLE_ENTRIES", 10000),
        max_bundle_bytes=_int(env, "CAREPLAN_MAX_BUNDLE_BYTES", 100 * 1024 * 1024),
        token_lifetime_seconds=_int(env, "CAREPLAN_TOKEN_LIFETIME_SECONDS", 900),
        token_issuer=(env.get("CAREPLAN_TOKEN_ISSUER") or "").rstrip("/") or None,
        token_audience=(env.get("CAREPLAN_TOKEN_AUDIENCE") or None),
        oidc_issuers=_oidc_issuers(env.get("CAREPLAN_OIDC_ISSUERS")),
        cors_origins=_origins(env.get("CAREPLAN_CORS_ORIGINS")),
        instance_dir=_instance_dir(env),
    )


def normalize_database_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg 3, whatever spelling the operator used."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _oidc_issuers(raw: str | None) -> tuple:
    from careplan.auth.oidc import parse_issuers

    try:
        return parse_issuers(raw)
    except ValueError as exc:
        raise ConfigError(f"CAREPLAN_OIDC_ISSUERS {exc}") from None


def _origins(raw: str | None) -> tuple[str, ...]:
    return tuple(origin.strip().rstrip("/") for origin in (raw or "").split(",") if origin.strip())


def _instance_dir(env) -> Path:
    """Return CAREPLAN_INSTANCE_DIR, else the folder of a SQLite database file, else instance/."""
    if env.get("CAREPLAN_INSTANCE_DIR"):
        return Path(env["CAREPLAN_INSTANCE_DIR"])
    url = env.get("CAREPLAN_DATABASE_URL") or default_database_url()
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        return Path(url[len("sqlite:///"):]).parent
    return PROJECT_ROOT / "instance"


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value
