"""Admin: API tokens (admin, tenant, agent-bootstrap). Secrets are shown once."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from controller import audit
from controller.api.deps import Require, get_db
from controller.api.problems import Problem, not_found
from controller.api.schemas import TokenCreated, TokenIn, TokenOut, WhoAmI
from controller.auth.tokens import Principal, Role, create_api_token, revoke_api_token
from controller.store.db import Database
from controller.store.models import ApiToken

router = APIRouter(prefix="/v1", tags=["tokens"])
ADMIN = Require(Role.admin)


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut(
        key_id=row.key_id,
        name=row.name,
        role=row.role,
        tenant=row.tenant,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(_: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> list[TokenOut]:
    with db.session() as session:
        return [token_out(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.id))]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> TokenCreated:
    detail = {"role": body.role, "tenant": body.tenant, "name": body.name}
    with audit.mutation(db, principal, "token.create", body.name or body.role, detail) as (session, info):
        try:
            row, secret = create_api_token(
                session, role=Role(body.role), name=body.name, tenant=body.tenant, created_by=principal.actor
            )
        except ValueError as exc:
            raise Problem(422, "validation-error", str(exc)) from None
        info["key_id"] = row.key_id
        return TokenCreated(**token_out(row).model_dump(), token=secret)


@router.delete("/tokens/{key_id}", status_code=204)
def revoke_token(key_id: str, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> Response:
    with audit.mutation(db, principal, "token.revoke", key_id) as (session, _):
        if not revoke_api_token(session, key_id):
            raise not_found(f"token {key_id}")
    return Response(status_code=204)


@router.get("/whoami", response_model=WhoAmI, tags=["auth"])
def whoami(principal: Principal = Depends(Require(*Role))) -> WhoAmI:
    """Who this token is; any role."""
    return WhoAmI(role=principal.role.value, name=principal.name, tenant=principal.tenant, host=principal.hostname)
