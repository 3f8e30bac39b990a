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
    # Reminders (scheduler/): see README "Reminders".
    scheduler_interval_seconds: float = 15.0  # the APScheduler clock: one tick per interval
    scheduler_batch_size: int = 200  # reminders or deliveries claimed per query
    reminder_lease_seconds: float = 120.0  # a claim not finished by then is taken over by another worker
    delivery_retry_hours: float = 26.0  # a failing delivery is retried this long after its first attempt, then dead
    delivery_backoff_base_seconds: float = 30.0  # backoff = random(0, min(cap, base * 2**attempts))
    delivery_backoff_cap_seconds: float = 3600.0
    webhook_timeout_seconds: float = 10.0
    smtp_host: str | None = None  # e-mail channel off while unset
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_from: str = "careplan@localhost"
    smtp_ca_file: str | None = None  # PEM file of CAs to trust for STARTTLS (else the system's)
    # Reminder rules (careplan.reminders.policy), per practice tier in the order recommended, promising, emerging.
    reminder_lead_days: tuple[float, float, float] = (2.0, 1.0, 0.0)  # remind this many days before due
    reminder_escalate_after: tuple[int, int, int] = (1, 2, 3)  # missed days before the coordinator is told
    plan_review_days: int = 90  # an active plan is re-assessed this often
    digest_time: str = "07:30"  # default local time of the daily digest
    # Referral service levels (careplan.referrals.sla), in business days in the agency's time zone.
    sla_response_business_days: int = 2  # a partner accepts or declines within this
    sla_contact_business_days: int = 5  # and makes first contact with the client within this
    holidays: frozenset = frozenset()  # datetime.date values, from CAREPLAN_HOLIDAYS (comma-separated ISO dates)
    default_timezone: str = "America/Toronto"  # IANA zone of agencies whose Organization names none
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
        scheduler_interval_seconds=_float(env, "CAREPLAN_SCHEDULER_INTERVAL_SECONDS", 15.0),
        scheduler_batch_size=_int(env, "CAREPLAN_SCHEDULER_BATCH_SIZE", 200),
        reminder_lease_seconds=_float(env, "CAREPLAN_REMINDER_LEASE_SECONDS", 120.0),
        delivery_retry_hours=_float(env, "CAREPLAN_DELIVERY_RETRY_HOURS", 26.0),
        delivery_backoff_base_seconds=_float(env, "CAREPLAN_DELIVERY_BACKOFF_BASE_SECONDS", 30.0),
        delivery_backoff_cap_seconds=_float(env, "CAREPLAN_DELIVERY_BACKOFF_CAP_SECONDS", 3600.0),
        webhook_timeout_seconds=_float(env, "CAREPLAN_WEBHOOK_TIMEOUT_SECONDS", 10.0),
        smtp_host=(env.get("CAREPLAN_SMTP_HOST") or None),
        smtp_port=_int(env, "CAREPLAN_SMTP_PORT", 25),
        smtp_username=(env.get("CAREPLAN_SMTP_USERNAME") or None),
        smtp_password=(env.get("CAREPLAN_SMTP_PASSWORD") or None),
        smtp_starttls=env.get("CAREPLAN_SMTP_STARTTLS", "").lower() in {"1", "true", "yes"},
        smtp_from=(env.get("CAREPLAN_SMTP_FROM") or "careplan@localhost"),
        smtp_ca_file=(env.get("CAREPLAN_SMTP_CA_FILE") or None),
        reminder_lead_days=tuple(_days(env, f"CAREPLAN_REMINDER_LEAD_DAYS_{tier}", default) for tier, default in (
            ("RECOMMENDED", 2.0), ("PROMISING", 1.0), ("EMERGING", 0.0))),
        reminder_escalate_after=tuple(_int(env, f"CAREPLAN_REMINDER_ESCALATE_AFTER_MISSES_{tier}", default)
                                      for tier, default in (("RECOMMENDED", 1), ("PROMISING", 2), ("EMERGING", 3))),
        plan_review_days=_int(env, "CAREPLAN_PLAN_REVIEW_DAYS", 90),
        digest_time=_hhmm(env, "CAREPLAN_DIGEST_TIME", "07:30"),
        sla_response_business_days=_int(env, "CAREPLAN_SLA_RESPONSE_BUSINESS_DAYS", 2),
        sla_contact_business_days=_int(env, "CAREPLAN_SLA_CONTACT_BUSINESS_DAYS", 5),
        holidays=_holidays(env.get("CAREPLAN_HOLIDAYS")),
        default_timezone=_timezone(env, "CAREPLAN_DEFAULT_TIMEZONE", "America/Toronto"),
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


def _days(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of days, got {raw!r}") from None
    if not 0 <= value <= 365:
        raise ConfigError(f"{name} must be between 0 and 365 days, got {raw}")
    return value


def _hhmm(env, name: str, default: str) -> str:
    raw = env.get(name) or default
    hours, _, minutes = raw.partition(":")
    if not (len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit()
            and int(hours) < 24 and int(minutes) < 60):
        raise ConfigError(f"{name} must be a local time like 07:30, got {raw!r}")
    return raw


def _holidays(raw: str | None) -> frozenset:
    from datetime import date

    try:
        return frozenset(date.fromisoformat(part.strip()) for part in (raw or "").split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"CAREPLAN_HOLIDAYS must be comma-separated ISO dates (2026-12-25,...), got {raw!r}") from None


def _timezone(env, name: str, default: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    raw = (env.get(name) or "").strip() or default
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name} must be an IANA time zone such as America/Toronto, got {raw!r}") from None
    return raw


def _float(env, name: str, default: float) -> float:
    return _positive(env, name, default, float, "a number")


def _int(env, name: str, default: int) -> int:
    return _positive(env, name, default, int, "an integer")


def _positive(env, name: str, default, kind, described: str):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {described}, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {raw}")
    return value
