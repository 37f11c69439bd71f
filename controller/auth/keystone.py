"""OpenStack Keystone tokens, validated by the Keystone that issued them (identity v3).

``GET /v3/auth/tokens`` with the user's token as both ``X-Auth-Token`` and ``X-Subject-Token``: Keystone's default
policy lets a token validate itself (``rule:token_subject``), so gpufabric needs no service account and no
password of its own. Keystone answers the token's user, project (with domain) and roles, or 401/404 for a token
that is unknown, expired or revoked. A validated token is trusted ``keystone_token_cache_s`` (never past its own
``expires_at``): the bound for a revocation in Keystone to reach gpufabric, and what keeps Keystone out of every
request's path.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from controller.auth.oidc import TokenRejected

MAX_CACHED = 10_000


@dataclass(frozen=True)
class KeystoneToken:
    user: str
    user_id: str
    project: dict[str, Any]
    roles: list[str]
    expires_at: datetime | None


class KeystoneUnavailable(Exception):
    """Keystone could not be asked (down, unreachable, a 5xx): not the token's fault."""


class KeystoneValidator:
    def __init__(self, url: str, *, cache_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/v3"):
            self.url += "/v3"
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, KeystoneToken]] = {}

    def validate(self, token: str) -> KeystoneToken:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self._ask(token)
        if self.cache_s > 0:
            until = now + self.cache_s
            if found.expires_at is not None:
                until = min(until, now + (found.expires_at - datetime.now(UTC)).total_seconds())
            with self._lock:
                if len(self._cache) >= MAX_CACHED:
                    self._cache = {d: e for d, e in self._cache.items() if e[0] > now}
                    if len(self._cache) >= MAX_CACHED:
                        self._cache.clear()
                self._cache[digest] = (until, found)
        return found

    def _ask(self, token: str) -> KeystoneToken:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token, "Accept": "application/json"}
        try:
            response = httpx.get(f"{self.url}/auth/tokens", headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise KeystoneUnavailable(f"Keystone at {self.url} could not be reached: {exc}") from None
        if response.status_code in (401, 403, 404):
            raise TokenRejected("Keystone does not accept the token (unknown, expired or revoked)")
        if response.status_code != 200:
            raise KeystoneUnavailable(f"Keystone at {self.url} answered HTTP {response.status_code}")
        try:
            body = response.json()["token"]
        except (ValueError, KeyError, TypeError):
            raise KeystoneUnavailable(f"Keystone at {self.url} answered something that is not a token") from None
        project = body.get("project")
        if not isinstance(project, dict):
            raise TokenRejected("the Keystone token is not scoped to a project (ask for a project-scoped token)")
        user = body.get("user") or {}
        expires = body.get("expires_at")
        return KeystoneToken(
            user=str(user.get("name") or user.get("id") or "?"),
            user_id=str(user.get("id") or ""),
            project=project,
            roles=[str(r.get("name")) for r in body.get("roles") or [] if isinstance(r, dict)],
            expires_at=datetime.fromisoformat(expires.replace("Z", "+00:00")) if isinstance(expires, str) else None,
        )
