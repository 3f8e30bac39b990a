"""Test helpers for authentication: client keys and assertions, and a real OpenID Connect issuer on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

TOKEN_URL = "http://localhost/oauth/token"
_issuer_keys = itertools.count()


@lru_cache(maxsize=None)
def rsa_key(name: str = "default") -> rsa.RSAPrivateKey:
    """Return a 2048-bit RSA key, one per name for the whole run (generating them is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@lru_cache(maxsize=None)
def ec_key(name: str = "default", curve: str = "P-384") -> ec.EllipticCurvePrivateKey:
    """Return an EC key on curve, one per name."""
    return ec.generate_private_key({"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[curve])


def public_jwk(key, *, kid: str, alg: str | None = None) -> dict:
    """Return the public JWK of a private key."""
    public = key.public_key()
    jwk = (RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm).to_jwk(public, as_dict=True)
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


def client_assertion(key, *, client_id: str, kid: str | None, alg: str = "RS384", aud: str = TOKEN_URL,
                     expires_in: int = 240, jti: str | None = None, **claims) -> str:
    """Sign a SMART Backend Services client assertion."""
    now = int(time.time())
    payload = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + expires_in,
               "jti": jti or secrets.token_hex(8), **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


class LocalIssuer:
    """A real OpenID Connect issuer on 127.0.0.1: discovery document, JWKS, and tokens signed with its keys."""

    def __init__(self):
        self.keys: dict[str, object] = {}
        self.hits: dict[str, int] = {"discovery": 0, "jwks": 0}
        self.rotate()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/.well-known/openid-configuration":
                    issuer.hits["discovery"] += 1
                    self._json({"issuer": issuer.url, "jwks_uri": f"{issuer.url}/keys",
                                "id_token_signing_alg_values_supported": ["RS256"]})
                elif self.path == "/keys":
                    issuer.hits["jwks"] += 1
                    self._json({"keys": [public_jwk(k, kid=kid, alg="RS256") for kid, k in issuer.keys.items()]})
                else:
                    self.send_error(404)

            def _json(self, document):
                data = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def rotate(self) -> str:
        """Replace the issuer's signing key with a new one (new kid); return the kid."""
        kid = secrets.token_hex(6)
        self.keys = {kid: rsa_key(f"issuer-{next(_issuer_keys) % 4}")}  # a few keys serve every test
        self.current_kid = kid
        return kid

    def token(self, *, audience: str = "careplan", expires_in: int = 300, kid: str | None = None, key=None,
              **claims) -> str:
        """Sign an access token for a person as this issuer would."""
        now = int(time.time())
        payload = {"iss": self.url, "sub": "person-1", "aud": audience, "iat": now, "exp": now + expires_in,
                   "jti": secrets.token_hex(8), **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        kid = kid or self.current_kid
        return jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
