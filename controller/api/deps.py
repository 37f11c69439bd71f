"""Request dependencies: the database, and the role each route requires."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from controller.api.problems import Problem
from controller.auth.cache import AUTH_CACHE, token_digest
from controller.auth.external import ExternalIdentity, KeystoneUnavailable, NotMapped, TokenRejected
from controller.auth.tokens import Principal, Role, agent_credential_parts, authenticate, key_id_of
from controller.settings import Settings
from controller.store.db import Database


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class Require:
    """Dependency that authenticates the bearer token and checks its role.

    ``Depends(Require(Role.admin))`` on every route is how a route declares its roles; the app
    factory refuses to build an app with a ``/v1`` route that declares none. Agent credentials are
    additionally bound to the ``{host}`` path parameter.
    """

    def __init__(self, *roles: Role) -> None:
        if not roles:
            raise ValueError("a route must allow at least one role")
        self.roles = frozenset(roles)

    async def __call__(self, request: Request) -> Principal:
        # async: a cache hit (the common case, see controller.auth.cache) costs no thread hop and no
        # database session; a miss looks the token up in the threadpool.
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "unauthorized", "send `Authorization: Bearer <token>`")
        digest = token_digest(token)
        principal = AUTH_CACHE.get(digest)
        if principal is None and (agent := agent_credential_parts(token)) is not None:
            principal = AUTH_CACHE.warm_agent(*agent)  # loaded in bulk at start-up (controller.auth.cache)
            if principal is not None:
                AUTH_CACHE.put(digest, principal, agent[0])
        if principal is None:
            identity: ExternalIdentity = request.app.state.identity
            if identity.handles(token):
                # Not put in AUTH_CACHE: an outside token lives by its own cache (keystone_token_cache_s; an OIDC
                # token is checked locally against the cached key set), so a revocation in Keystone shows
                # exactly as documented, not up to the API-token cache's TTL later.
                principal = await run_in_threadpool(_outside, identity, token)
            else:
                principal = await run_in_threadpool(_lookup, get_db(request), token)
                if principal is not None:
                    AUTH_CACHE.put(digest, principal, key_id_of(token))
        if principal is None:
            raise Problem(401, "unauthorized", "the token is unknown or revoked")
        if principal.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise Problem(403, "forbidden", f"role {principal.role.value} may not do this (allowed: {allowed})")
        host = request.path_params.get("host")
        if principal.role is Role.agent and host is not None and host != principal.hostname:
            raise Problem(403, "forbidden", f"this credential is valid for host {principal.hostname} only")
        request.state.principal = principal
        return principal


def _outside(identity: ExternalIdentity, token: str) -> Principal:
    """An OIDC or Keystone token's principal (controller.auth.external), or the problem saying why not."""
    try:
        return identity.authenticate(token)
    except TokenRejected as exc:
        raise Problem(401, "unauthorized", str(exc)) from None
    except NotMapped as exc:
        raise Problem(403, "forbidden", str(exc)) from None
    except KeystoneUnavailable as exc:
        raise Problem(503, "unavailable", str(exc)) from None


def _lookup(db: Database, token: str) -> Principal | None:
    with db.session() as session:
        return authenticate(session, token)


def declared_roles(route: BaseRoute) -> frozenset[Role] | None:
    """The roles a route allows, from its ``Require`` dependency (None if it declares none)."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return None
    stack: list[Any] = [dependant]
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Require):
            return dep.call.roles
        stack.extend(dep.dependencies)
    return None


def utcnow() -> datetime:
    return datetime.now(UTC)


def role_names(roles: Iterable[Role]) -> list[str]:
    return sorted(r.value for r in roles)


def placement_changed(request: Request, hostname: str) -> None:
    """Reload one host into this replica's placement index after a write that changes what can go there, and
    finish leases waiting on it (MIG instances created on demand)."""
    request.app.state.leases.host_changed(hostname)
