"""Verify JWTs with PyJWT and say, in one vocabulary, which check a refused token failed."""

from __future__ import annotations

import jwt

from careplan.auth.exceptions import InvalidToken


def decode_claims(token: str, key, *, leeway: int, required: list[str], **checks) -> dict:
    """Verify a JWT's signature and claims; raise InvalidToken saying which check failed."""
    try:
        return jwt.decode(token, key, leeway=leeway, options={"require": required}, **checks)
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("the token is meant for another audience") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"the token is not acceptable: {exc}") from None
