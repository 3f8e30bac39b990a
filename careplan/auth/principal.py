"""The authenticated caller of a request, as the policy and audit code will see it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from careplan.auth.scopes import Need, ScopeSet, missing

# admin: runs the service; coordinator: staff of a care-coordination organisation; partner: an agency acting on
# referrals; ehr: a clinical system synchronising records; lead: a programme lead who reads the measures (aggregates
# only, no patient data).
ROLES: tuple[str, ...] = ("admin", "coordinator", "partner", "ehr", "lead")
ORGANIZATION_REFERENCE = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a registered client (kind ``client``) or a person signed in at an OpenID Connect issuer."""

    subject: str  # the client id for clients, the issuer's ``sub`` for people
    role: str
    organization: str | None  # "Organization/<id>" the caller acts for, if any
    scopes: ScopeSet
    issuer: str
    kind: str  # "client" or "user"
    client_id: str | None = None  # the OAuth client (for people: the issuer's azp/client_id claim, if any)
    token_id: str | None = None  # the token's jti, for the audit trail
    expires_at: datetime | None = None

    def may(self, resource_type: str, permissions: str) -> bool:
        """Tell whether the scopes grant every permission letter on resource_type."""
        return not missing(self.scopes, [Need(resource_type, permissions)])
