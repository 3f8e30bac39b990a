"""Authentication: OAuth 2.0 clients, signing keys, access tokens, SMART scopes and OpenID Connect issuers.

No Flask here: api/auth.py and api/oauth.py adapt these services to HTTP. The authenticated caller of a request is a
Principal; the later authorisation (role, organisation, consent) and audit code reads it from there.
"""

from careplan.auth.principal import ROLES, Principal

__all__ = ["ROLES", "Principal"]
