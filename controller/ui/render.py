"""Jinja2 templates (autoescaped) and the page responses every dashboard route returns."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from controller import __version__
from controller.ui.errors import UiError
from controller.ui.session import Forbidden, NotSignedIn, UiSession

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
# Scripts and styles only from the controller itself; no inline script, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.filters["when"] = when
TEMPLATES.globals["version"] = __version__


def page(request: Request, template: str, session: UiSession | None, status: int = 200, **context: Any) -> HTMLResponse:
    body = TEMPLATES.get_template(template).render(request=request, session=session, path=request.url.path, **context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def see_other(url: str) -> RedirectResponse:
    """After a successful POST: the browser GETs the page showing the result (a reload does not re-post)."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _signed_in(request: Request) -> UiSession | None:
    session = getattr(request.state, "ui_session", None)
    return session if isinstance(session, UiSession) else None


def install_error_pages(app: FastAPI) -> None:
    async def not_signed_in(request: Request, _: Exception) -> Response:
        if request.method != "GET" or request.headers.get("x-gpufabric-fragment"):
            return page(request, "error.html", None, 401, title="Signed out", message="Sign in again.")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/signin?next={quote(target, safe='')}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        return page(request, "error.html", _signed_in(request), 403, title="Not allowed", message=exc.message)

    async def ui_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UiError)
        title = {404: "Not found", 403: "Not allowed", 409: "Conflict", 422: "Invalid input"}.get(exc.status, "Error")
        return page(request, "error.html", _signed_in(request), exc.status, title=title, message=exc.message)

    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(UiError, ui_error)
