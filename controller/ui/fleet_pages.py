"""Admins: the fleet — hosts grouped by backend, pool, region and AZ, with their GPUs and states."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from controller.api.deps import get_db
from controller.store.db import Database
from controller.ui import fleet_data
from controller.ui.render import page
from controller.ui.session import UiSession, admin_session

router = APIRouter(include_in_schema=False)


def text_filter() -> Any:
    """A fresh ``Query`` per parameter: FastAPI binds a parameter's name to its FieldInfo, so one shared
    object would make every filter read the first one's query parameter."""
    return Query("", max_length=128)


REFRESH_S = 5


def fleet_filter(
    backend: str = text_filter(),
    pool: str = text_filter(),
    region: str = text_filter(),
    az: str = text_filter(),
    model: str = text_filter(),
    state: str = text_filter(),
    health: str = text_filter(),
) -> fleet_data.FleetFilter:
    """The fleet's filters, from the query string (the page and the fragment it polls read the same ones)."""
    return fleet_data.FleetFilter(backend, pool, region, az, model, state, health)


@router.get("/ui/fleet", response_class=HTMLResponse)
def fleet_page(
    request: Request,
    keep: fleet_data.FleetFilter = Depends(fleet_filter),
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    with db.session() as s:
        shown = fleet_data.fleet(s, keep)
        choices = fleet_data.filter_choices(s)
    return page(
        request, "fleet.html", session, title="Fleet", fleet=shown, choices=choices, keep=keep, refresh_s=REFRESH_S
    )


@router.get("/ui/fleet/hosts", response_class=HTMLResponse)
def fleet_fragment(
    request: Request,
    keep: fleet_data.FleetFilter = Depends(fleet_filter),
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    """The host groups alone: what the page's script polls every few seconds to stay current."""
    with db.session() as s:
        shown = fleet_data.fleet(s, keep)
    return page(request, "_fleet_groups.html", session, fleet=shown)
