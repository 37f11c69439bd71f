"""Sign-in with an API token (or an OIDC or Keystone token where the controller accepts them), sign-out, and ``/ui``
itself (the start page of the signed-in role)."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from controller.auth.tokens import Role
from controller.ui.forms import checked_form, form_fields
from controller.ui.render import page, see_other
from controller.ui.session import (
    COOKIE_PATH,
    DASHBOARD_ROLES,
    SIGNIN_COOKIE,
    SignInRefused,
    UiSession,
    clear_session_cookie,
    cookie_value,
    current_session,
    secure_cookies,
    set_session_cookie,
    signin_principal,
)

router = APIRouter(include_in_schema=False)
# Browsers keep cookies of up to 4096 bytes (name, value and attributes); large OIDC tokens can exceed that.
MAX_TOKEN_CHARS = 3800


def start_page(session: UiSession) -> str:
    return "/ui/fleet" if session.principal.role is Role.admin else "/ui/leases"


def safe_next(target: str | None) -> str | None:
    """Only a dashboard path of this controller (never another site: ``//evil``, ``/ui\\@evil``)."""
    if not target or not target.startswith("/ui/") or "//" in target or "\\" in target:
        return None
    return target


@router.get("/ui")
@router.get("/ui/")
async def home(session: UiSession = Depends(current_session)) -> Response:
    return RedirectResponse(start_page(session), status_code=303)


def _signin_form(request: Request, status: int = 200, message: str = "", next_url: str | None = None) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = page(
        request, "signin.html", None, status, title="Sign in", message=message, nonce=nonce, next_url=next_url or ""
    )
    response.set_cookie(
        SIGNIN_COOKIE, nonce, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=secure_cookies(request),
    )  # fmt: skip
    return response


@router.get("/ui/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    return _signin_form(request, next_url=safe_next(next))


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    fields = await form_fields(request)
    next_url = safe_next(fields.get("next"))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    sent = fields.get("csrf", "")
    if not expected or not hmac.compare_digest(expected, sent):
        return _signin_form(request, 403, "The sign-in form expired or came from another page; try again.", next_url)
    token = fields.get("token", "").strip()
    if not token:
        return _signin_form(
            request, 422, "Paste an API token (gft_...), an OIDC or a Keystone token to sign in.", next_url
        )
    if len(token) > MAX_TOKEN_CHARS:
        message = f"That token is too long to keep in a cookie ({len(token)} characters, at most {MAX_TOKEN_CHARS})."
        return _signin_form(request, 422, message, next_url)
    try:
        principal = await signin_principal(request, token)
    except SignInRefused as exc:
        return _signin_form(request, exc.status, exc.message, next_url)
    if principal.role not in DASHBOARD_ROLES:
        message = f"A {principal.role.value} token cannot sign in to the dashboard; use an admin or tenant token."
        return _signin_form(request, 403, message, next_url)
    value = cookie_value(token)
    target = next_url or ("/ui/fleet" if principal.role is Role.admin else "/ui/leases")
    response = see_other(target)
    set_session_cookie(request, response, value)
    response.delete_cookie(SIGNIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/ui/signout")
async def signout(request: Request, session: UiSession = Depends(current_session)) -> Response:
    await checked_form(request, session)
    response = see_other("/ui/signin")
    clear_session_cookie(request, response)
    return response
