"""OIDC bearer tokens: JWTs signed by the provider, checked against its JSON Web Key Set (JWKS).

The key set is fetched over HTTP and kept ``oidc_jwks_cache_s``; a token signed with a key id (``kid``) the cached
set lacks fetches it again at once (the provider rotated its keys), at most every ``oidc_jwks_min_refresh_s`` so
tokens with made-up key ids cannot make the controller hammer the provider. Checked: the signature (asymmetric
algorithms only: RS*, PS*, ES*, EdDSA; never ``none`` or HMAC, whose "key" would be public), ``iss``, ``aud``,
``exp`` (required), ``nbf`` and ``iat`` when present, with 30 s of clock leeway. The claims then go through the
mapping (:mod:`controller.auth.mapping`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import jwt

log = logging.getLogger("gpufabric.auth")

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 30.0


class TokenRejected(Exception):
    """The token is not valid (the message says why; it never contains the token)."""


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        *,
        cache_s: float = 300.0,
        min_refresh_s: float = 5.0,
        timeout_s: float = 5.0,
    ) -> None:
        if not (issuer and audience and jwks_url):
            raise ValueError("OIDC needs oidc_issuer, oidc_audience and oidc_jwks_url")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.cache_s = cache_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self.fetches = 0

    def _fetch(self) -> None:
        """Fetch the key set (the caller holds the lock). A failure keeps the keys we had."""
        self._fetched_at = time.monotonic()
        try:
            response = httpx.get(self.jwks_url, timeout=self.timeout_s, follow_redirects=False)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning("OIDC key set %s could not be fetched: %s", self.jwks_url, exc)
            return
        finally:
            self.fetches += 1
        self._keys = {k.key_id: k for k in keys if k.key_id}

    def key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if age >= self.cache_s or (kid not in self._keys and age >= self.min_refresh_s):
                self._fetch()
            found = self._keys.get(kid)
        if found is None:
            raise TokenRejected(f"no key {kid!r} in the provider's key set")
        return found

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, issuer, audience and lifetime check out."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"not a JWT: {exc}") from None
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the JWT names no key (kid)")
        if alg not in ALGORITHMS:
            raise TokenRejected(f"JWT algorithm {alg!r} is not accepted")
        key = self.key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"the JWT is not issued for audience {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected(f"the JWT is not issued by {self.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the JWT's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the JWT is not valid: {exc}") from None
        return claims


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")
