"""The admin-state routes hosts and devices share: ``POST …/{id}/drain``, ``…/undrain`` and ``…/quarantine``.

Each answers the changed object; the body (``AdminStateIn``) is optional and carries the audit reason. The moves
themselves (which state may follow which) are the fleet's state machine (``controller.fleet.states``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request

from controller.api.deps import Require, get_db
from controller.api.schemas import AdminStateIn
from controller.auth.tokens import Principal, Role
from controller.fleet.states import AdminState
from controller.store.db import Database

ADMIN = Require(Role.admin)
# (route verb, state it sets)
ACTIONS: tuple[tuple[str, AdminState], ...] = (
    ("drain", "drained"),
    ("undrain", "active"),
    ("quarantine", "quarantined"),
)

SetState = Callable[[Request, Database, Principal, str, AdminState, str], Any]


def add_admin_state_routes(
    router: APIRouter,
    *,
    param: str,
    noun: str,
    response_model: type,
    set_state: SetState,
    docs: dict[str, str] | None = None,
) -> None:
    """Add the three routes to ``router``, named ``drain_<noun>`` etc. (their OpenAPI operation ids follow)."""
    for verb, state in ACTIONS:
        router.add_api_route(
            f"/{{{param}}}/{verb}",
            _endpoint(param, state, set_state),
            methods=["POST"],
            response_model=response_model,
            name=f"{verb}_{noun}",
            description=(docs or {}).get(verb, ""),
        )


def _endpoint(param: str, state: AdminState, set_state: SetState) -> Callable[..., Any]:
    def endpoint(**kwargs: Any) -> Any:
        body: AdminStateIn | None = kwargs["body"]
        return set_state(
            kwargs["request"], kwargs["db"], kwargs["principal"], kwargs[param], state, body.reason if body else ""
        )

    # FastAPI reads the parameters from the signature: the path parameter takes the route's own name.
    keyword = inspect.Parameter.KEYWORD_ONLY
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(param, keyword, annotation=str),
            inspect.Parameter("request", keyword, annotation=Request),
            inspect.Parameter("body", keyword, annotation=AdminStateIn | None, default=None),
            inspect.Parameter("principal", keyword, annotation=Principal, default=Depends(ADMIN)),
            inspect.Parameter("db", keyword, annotation=Database, default=Depends(get_db)),
        ]
    )
    return endpoint
