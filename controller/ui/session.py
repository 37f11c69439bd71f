"""The dashboard session: an HttpOnly cookie carrying the API token, and a CSRF token derived from it.

The cookie holds ``<nonce>.<API token>``. Every request authenticates the token exactly as the REST API does
(``controller.auth``: the cache, then the store), so revoking the token ends the session on every replica at
once and a tenant's session sees what its bearer token would. The CSRF token is HMAC-SHA256(token, nonce):
a fresh one per sign-in, checked on every POST, computable only by whoever holds the cookie's secret — and the
cookie is SameSite=Strict on top.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from controller.api.deps import get_db
from controller.auth.cache import AUTH_CACHE, token_digest
from controller.auth.tokens import Principal, Role, authenticate, key_id_of

SESSION_COOKIE = "gpufabric_session"
# Before sign-in there is no session to derive a CSRF token from: the sign-in form uses a double-submit cookie.
SIGNIN_COOKIE = "gpufabric_signin"
COOKIE_PATH = "/ui"
SESSION_MAX_AGE_S = 12 * 3600
DASHBOARD_ROLES = frozenset({Role.admin, Role.tenant})


class NotSignedIn(Exception):
    """No valid session: pages redirect to the sign-in form."""


class Forbidden(Exception):
    """Signed in, but this role may not see the page (or the CSRF token is wrong)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class UiSession:
    principal: Principal
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.principal.role is Role.admin


def csrf_for(token: str, nonce: str) -> str:
    return hmac.new(token.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def cookie_value(token: str) -> str:
    return f"{secrets.token_urlsafe(16)}.{token}"


def _split(value: str) -> tuple[str, str] | None:
    nonce, dot, token = value.partition(".")
    if not dot or not nonce or not token:
        return None
    return nonce, token


async def principal_for_token(request: Request, token: str) -> Principal | None:
    """The principal of an API token, as ``controller.api.deps.Require`` finds it (agent credentials excluded)."""
    digest = token_digest(token)
    principal = AUTH_CACHE.get(digest)
    if principal is None:
        db = get_db(request)

        def lookup() -> Principal | None:
            with db.session() as session:
                return authenticate(session, token)

        principal = await run_in_threadpool(lookup)
        if principal is not None:
            AUTH_CACHE.put(digest, principal, key_id_of(token))
    return principal


async def current_session(request: Request) -> UiSession:
    """The signed-in session of this request; raises :class:`NotSignedIn` without a valid one."""
    parts = _split(request.cookies.get(SESSION_COOKIE, ""))
    if parts is None:
        raise NotSignedIn()
    nonce, token = parts
    principal = await principal_for_token(request, token)
    if principal is None or principal.role not in DASHBOARD_ROLES:
        raise NotSignedIn()
    request.state.principal = principal  # request logs and audit entries name who acted
    session = UiSession(principal=principal, csrf=csrf_for(token, nonce))
    request.state.ui_session = session  # error pages keep the signed-in navigation
    return session


async def admin_session(request: Request) -> UiSession:
    session = await current_session(request)
    if not session.is_admin:
        raise Forbidden(f"this page is for admins; you are signed in as tenant {session.principal.tenant}")
    return session


def check_csrf(session: UiSession, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure_cookies(request)
    )
