"""Admins: the fleet — hosts grouped by backend, pool, region and AZ, with their GPUs and states."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from controller.api.deps import get_db
from controller.store.db import Database
from controller.ui import fleet_data
from controller.ui.render import page
from controller.ui.session import UiSession, admin_session

router = APIRouter(include_in_schema=False)
FILTER = Query("", max_length=128)
REFRESH_S = 5


def _filter(
    backend: str, pool: str, region: str, az: str, model: str, state: str, health: str
) -> fleet_data.FleetFilter:
    return fleet_data.FleetFilter(backend, pool, region, az, model, state, health)


@router.get("/ui/fleet", response_class=HTMLResponse)
def fleet_page(
    request: Request,
    backend: str = FILTER,
    pool: str = FILTER,
    region: str = FILTER,
    az: str = FILTER,
    model: str = FILTER,
    state: str = FILTER,
    health: str = FILTER,
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    keep = _filter(backend, pool, region, az, model, state, health)
    with db.session() as s:
        groups = fleet_data.fleet(s, keep)
        choices = fleet_data.filter_choices(s)
    return page(
        request, "fleet.html", session, title="Fleet", groups=groups, choices=choices, keep=keep, refresh_s=REFRESH_S
    )


@router.get("/ui/fleet/hosts", response_class=HTMLResponse)
def fleet_fragment(
    request: Request,
    backend: str = FILTER,
    pool: str = FILTER,
    region: str = FILTER,
    az: str = FILTER,
    model: str = FILTER,
    state: str = FILTER,
    health: str = FILTER,
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    """The host groups alone: what the page's script polls every few seconds to stay current."""
    keep = _filter(backend, pool, region, az, model, state, health)
    with db.session() as s:
        groups = fleet_data.fleet(s, keep)
    return page(request, "_fleet_groups.html", session, groups=groups)
