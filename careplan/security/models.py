"""Tables of the security domain: Consent provisions flattened for SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from careplan.models import Base, BigPK, UTCDateTime


class ConsentGrant(Base):
    """One flattened provision of an active patient-privacy Consent (see careplan.security.grants)."""

    __tablename__ = "consent_grant"

    pk: Mapped[int] = mapped_column(BigPK, primary_key=True, autoincrement=True)
    consent_pk: Mapped[int] = mapped_column(ForeignKey("resource.pk", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    resource_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    path: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_consent_grant_lookup", "patient_id", "actor", "kind"),)
