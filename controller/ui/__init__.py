"""The web dashboard at ``/ui``: server-rendered pages over the same services and role checks as the REST API.

Signed in with an API token (the one ``gpufabric login`` takes) turned into an HttpOnly session cookie; every
form carries a per-session CSRF token. See docs/dashboard.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install_ui(app: FastAPI) -> None:
    """Mount the dashboard's routes and its static files (no CDN: everything is served from here)."""
    from controller.ui import audit_pages, fleet_pages, host_pages, lease_pages, signin, validation_pages
    from controller.ui.render import install_error_pages

    for module in (signin, fleet_pages, host_pages, lease_pages, validation_pages, audit_pages):
        app.include_router(module.router)
    install_error_pages(app)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
