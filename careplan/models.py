"""SQLAlchemy models: versioned FHIR resources and their search index, one schema for SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# PostgreSQL: JSONB (keeps numeric scale, so 1.50 stays 1.50); SQLite: JSON text.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Resource(Base):
    """The current version of one FHIR resource (the head of its history)."""

    __tablename__ = "resource"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    res_type: Mapped[str] = mapped_column(String(64))
    res_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # None while deleted: the last live content stays in resource_version.
    content: Mapped[dict | None] = mapped_column(JSONDocument, nullable=True)

    __table_args__ = (
        UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
        Index("ix_resource_type_last_updated", "res_type", "last_updated"),
        Index("ix_resource_last_updated", "last_updated"),
        Index("ix_resource_type_pk", "res_type", "pk"),  # searches page through one type in pk order
    )


class ResourceVersion(Base):
    """One version of a resource, kept forever; ``pk`` orders the whole history."""

    __tablename__ = "resource_version"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk"))
    res_type: Mapped[str] = mapped_column(String(64))
    res_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    method: Mapped[str] = mapped_column(String(8))  # POST, PUT, PATCH or DELETE
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[dict | None] = mapped_column(JSONDocument, nullable=True)

    __table_args__ = (
        UniqueConstraint("resource_pk", "version_id", name="uq_resource_version_resource_version"),
        Index("ix_resource_version_type_last_updated", "res_type", "last_updated"),
        Index("ix_resource_version_last_updated", "last_updated"),
    )


def _resource_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("resource.pk", ondelete="CASCADE"), index=True)


class SearchToken(Base):
    """Token search values (codes, identifiers, booleans, contact points)."""

    __tablename__ = "search_token"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    system: Mapped[str | None] = mapped_column(Text, nullable=True)
    code: Mapped[str | None] = mapped_column(Text, nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_search_token_lookup", "res_type", "param", "code", "system"),)


class SearchString(Base):
    """String search values, with an accent- and case-folded form for matching."""

    __tablename__ = "search_string"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    normalized: Mapped[str] = mapped_column(Text)

    # text_pattern_ops: PostgreSQL uses the index for LIKE 'prefix%' whatever the database collation
    __table_args__ = (Index("ix_search_string_lookup", "res_type", "param", "normalized",
                            postgresql_ops={"normalized": "text_pattern_ops"}),)


class SearchDate(Base):
    """Date search values as the UTC range their precision implies."""

    __tablename__ = "search_date"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    low: Mapped[datetime] = mapped_column(UTCDateTime())
    high: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_search_date_low", "res_type", "param", "low"),
        Index("ix_search_date_high", "res_type", "param", "high"),
    )


class SearchReference(Base):
    """Reference search values; target columns also serve reverse lookups (_revinclude, _has)."""

    __tablename__ = "search_reference"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_search_reference_lookup", "res_type", "param", "target_id", "target_type"),
        Index("ix_search_reference_target", "target_type", "target_id"),
        Index("ix_search_reference_url", "res_type", "param", "url"),
    )


class SearchNumber(Base):
    """Number search values, kept as exact decimals."""

    __tablename__ = "search_number"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    value: Mapped[Decimal] = mapped_column(Numeric(asdecimal=True))

    __table_args__ = (Index("ix_search_number_lookup", "res_type", "param", "value"),)


class SearchQuantity(Base):
    """Quantity search values with their unit system and code."""

    __tablename__ = "search_quantity"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    value: Mapped[Decimal] = mapped_column(Numeric(asdecimal=True))
    system: Mapped[str | None] = mapped_column(Text, nullable=True)
    code: Mapped[str | None] = mapped_column(Text, nullable=True)
    unit: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_search_quantity_lookup", "res_type", "param", "value"),)


class SearchUri(Base):
    """URI and canonical search values."""

    __tablename__ = "search_uri"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = _resource_fk()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(100))
    uri: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_search_uri_lookup", "res_type", "param", "uri"),)


INDEX_TABLES = (SearchToken, SearchString, SearchDate, SearchReference, SearchNumber, SearchQuantity, SearchUri)


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


# -- authentication (careplan.auth) -------------------------------------------------------------------------------


class OAuthClient(Base):
    """A registered OAuth 2.0 client; the secret is kept only as a scrypt hash, public keys as a JWK Set."""

    __tablename__ = "oauth_client"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    organization: Mapped[str | None] = mapped_column(String(100), nullable=True)
    scopes: Mapped[str] = mapped_column(Text)  # space-separated SMART scopes it may be granted
    grant_types: Mapped[str] = mapped_column(String(200))  # space-separated
    secret_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    jwks: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON JWK Set of its public keys
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SigningKey(Base):
    """A key the token service signs access tokens with; ``kid`` is its RFC 7638 thumbprint.

    Active while ``rotated_out_at`` is empty; after rotation it only verifies, until ``retire_after`` (when every
    token it signed has expired) or ``retired_at`` (retired early). Its private half is erased at rotation.
    """

    __tablename__ = "oauth_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key: Mapped[str | None] = mapped_column(Text, nullable=True)  # PKCS#8 PEM
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    rotated_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retire_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsedClientAssertion(Base):
    """The jti of a client assertion already used, kept until the assertion expires (replay protection)."""

    __tablename__ = "oauth_used_assertion"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
