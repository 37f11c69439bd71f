"""Token format, hashing and lookup.

A token is ``gf<kind>_<key_id>_<secret>``: ``key_id`` finds the row, ``secret`` (256 bits) is checked
against the stored sha256 in constant time. A high-entropy secret needs no slow KDF; sha256 keeps
authentication at one indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store.models import AgentCredential, ApiToken, Host


class Role(StrEnum):
    admin = "admin"
    tenant = "tenant"
    agent = "agent"
    bootstrap = "agent-bootstrap"


API_TOKEN_PREFIX = "gft"
AGENT_CREDENTIAL_PREFIX = "gfa"


@dataclass(frozen=True)
class Principal:
    role: Role
    name: str
    tenant: str | None = None
    hostname: str | None = None
    host_id: int | None = None

    @property
    def actor(self) -> str:
        if self.role is Role.agent:
            return f"agent:{self.hostname}"
        if self.role is Role.tenant:
            return f"tenant:{self.tenant}:{self.name}"
        return f"{self.role.value}:{self.name}"


@dataclass(frozen=True)
class IssuedToken:
    key_id: str
    token: str
    secret_sha256: str


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(prefix: str) -> IssuedToken:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedToken(key_id=key_id, token=f"{prefix}_{key_id}_{secret}", secret_sha256=_sha256(secret))


def _split(token: str) -> tuple[str, str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def key_id_of(token: str) -> str:
    parts = _split(token)
    return parts[1] if parts else ""


def create_api_token(
    session: Session, *, role: Role, name: str, tenant: str | None = None, created_by: str = ""
) -> tuple[ApiToken, str]:
    """Store a new token; returns the row and the secret token (shown once, never stored)."""
    if role is Role.agent:
        raise ValueError("agent credentials are issued by registration, not created directly")
    if role is Role.tenant and not tenant:
        raise ValueError("a tenant token needs --tenant")
    if role is not Role.tenant and tenant:
        raise ValueError("only tenant tokens are scoped to a tenant")
    issued = issue(API_TOKEN_PREFIX)
    row = ApiToken(
        key_id=issued.key_id,
        secret_sha256=issued.secret_sha256,
        name=name,
        role=role.value,
        tenant=tenant,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, issued.token


def revoke_agent_credentials(session: Session, host: Host) -> int:
    """Revoke every live credential of the host; returns how many. Each replica drops them from its auth cache
    through the host change feed (a changed ``AgentCredential`` row stamps its host)."""
    now = datetime.now(UTC)
    revoked = 0
    for old in session.scalars(
        select(AgentCredential).where(AgentCredential.host_id == host.id, AgentCredential.revoked_at.is_(None))
    ):
        old.revoked_at = now
        revoked += 1
    return revoked


def has_live_credential(session: Session, host_id: int) -> bool:
    """Whether an agent holds a credential for this host that still works (one indexed read)."""
    return (
        session.scalar(
            select(AgentCredential.id)
            .where(AgentCredential.host_id == host_id, AgentCredential.revoked_at.is_(None))
            .limit(1)
        )
        is not None
    )


def issue_agent_credential(session: Session, host: Host) -> str:
    """Revoke the host's earlier credentials and issue a new one (re-registration rotates it)."""
    revoke_agent_credentials(session, host)
    issued = issue(AGENT_CREDENTIAL_PREFIX)
    session.add(AgentCredential(key_id=issued.key_id, secret_sha256=issued.secret_sha256, host_id=host.id))
    session.flush()
    return issued.token


def agent_credential_parts(token: str) -> tuple[str, str] | None:
    """``(key_id, sha256 of the secret)`` of an agent credential (None for any other token)."""
    parts = _split(token)
    if parts is None or parts[0] != AGENT_CREDENTIAL_PREFIX:
        return None
    return parts[1], _sha256(parts[2])


def live_agent_credentials(session: Session) -> list[tuple[str, str, int, str]]:
    """Every unrevoked agent credential as ``(key_id, secret_sha256, host_id, hostname)`` (one query)."""
    rows = session.execute(
        select(AgentCredential.key_id, AgentCredential.secret_sha256, AgentCredential.host_id, Host.hostname)
        .join(Host, Host.id == AgentCredential.host_id)
        .where(AgentCredential.revoked_at.is_(None))
    )
    return [(k, s, h, n) for k, s, h, n in rows]


def authenticate(session: Session, token: str) -> Principal | None:
    parts = _split(token)
    if parts is None:
        return None
    prefix, key_id, secret = parts
    digest = _sha256(secret)
    if prefix == API_TOKEN_PREFIX:
        row = session.scalar(select(ApiToken).where(ApiToken.key_id == key_id))
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_sha256, digest):
            return None
        return Principal(role=Role(row.role), name=row.name or row.key_id, tenant=row.tenant)
    if prefix == AGENT_CREDENTIAL_PREFIX:
        found = session.execute(
            select(AgentCredential, Host.hostname)
            .join(Host, Host.id == AgentCredential.host_id)
            .where(AgentCredential.key_id == key_id)
        ).first()
        if found is None:
            return None
        cred, hostname = found
        if cred.revoked_at is not None or not hmac.compare_digest(cred.secret_sha256, digest):
            return None
        return Principal(role=Role.agent, name=hostname, hostname=hostname, host_id=cred.host_id)
    return None


def revoke_api_token(session: Session, key_id: str) -> bool:
    row = session.scalar(select(ApiToken).where(ApiToken.key_id == key_id))
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return True
