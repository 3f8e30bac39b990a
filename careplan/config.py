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
    )


def normalize_database_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg 3, whatever spelling the operator used."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


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
