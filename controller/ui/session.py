"""The dashboard session: an HttpOnly cookie carrying the token signed in with, and a CSRF token derived from it.

The cookie holds ``<nonce>.<token>``: a gpufabric API token, or an OIDC access token or Keystone token where the
controller accepts those (``controller.auth.external``, docs/identity.md). Every request authenticates the token
exactly as the REST API does (an API token: the cache, then the store; an outside token: its signature and
expiry against the provider's key set, or Keystone, with its own cache), so revoking the token ends the session on
every replica at once, an outside token's session ends when that token expires or Keystone revokes it, and a
tenant's session sees what its bearer token would. The CSRF token is HMAC-SHA256(token, nonce):
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
from controller.auth.external import ExternalIdentity, KeystoneUnavailable, NotMapped, TokenRejected
from controller.auth.tokens import Principal, Role, authenticate, key_id_of

SESSION_COOKIE = "gpufabric_session"
# Before sign-in there is no session to derive a CSRF token from: the sign-in form uses a double-submit cookie.
SIGNIN_COOKIE = "gpufabric_signin"
COOKIE_PATH = "/ui"
SESSION_MAX_AGE_S = 12 * 3600
DASHBOARD_ROLES = frozenset({Role.admin, Role.tenant})


class NotSignedIn(Exception):
    """No valid session: pages redirect to the sign-in form."""


class SignInRefused(Exception):
    """A token that cannot sign in, with the status and the message the sign-in form shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


async def signin_principal(request: Request, token: str) -> Principal:
    """The principal of a token, as ``controller.api.deps.Require`` finds it (agent credentials excluded): an API
    token from the cache or the store, an OIDC or Keystone token from its provider. Raises :class:`SignInRefused`."""
    digest = token_digest(token)
    principal = AUTH_CACHE.get(digest)
    if principal is not None:
        return principal
    identity: ExternalIdentity = request.app.state.identity
    if identity.handles(token):
        # Not put in AUTH_CACHE, as in the API: an outside token lives by its own cache and expiry.
        try:
            return await run_in_threadpool(identity.authenticate, token)
        except TokenRejected as exc:
            raise SignInRefused(401, f"That token was refused: {exc}") from None
        except NotMapped as exc:
            raise SignInRefused(403, f"{exc}: it gives no gpufabric role.") from None
        except KeystoneUnavailable as exc:
            raise SignInRefused(503, f"The token cannot be checked now: {exc}") from None
    db = get_db(request)

    def lookup() -> Principal | None:
        with db.session() as session:
            return authenticate(session, token)

    found = await run_in_threadpool(lookup)
    if found is None:
        raise SignInRefused(401, "That token is unknown or revoked.")
    AUTH_CACHE.put(digest, found, key_id_of(token))
    return found


async def principal_for_token(request: Request, token: str) -> Principal | None:
    """:func:`signin_principal`, None when the token is refused."""
    try:
        return await signin_principal(request, token)
    except SignInRefused:
        return None


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
