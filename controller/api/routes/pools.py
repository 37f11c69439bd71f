"""Admin: pools and their policies (MIG config, sharing, on-demand MIG)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller import audit
from controller.api.deps import Require, get_db
from controller.api.desired_checks import check_documents, check_mig_on_gpus, gpus_of, pool_hosts_following_mig
from controller.api.problems import conflict, not_found
from controller.api.schemas import PoolIn, PoolOut, PoolPolicy
from controller.auth.tokens import Principal, Role
from controller.store.changes import mark_pool_changed
from controller.store.db import Database
from controller.store.models import Host, Pool

router = APIRouter(prefix="/v1/pools", tags=["pools"])
ADMIN = Require(Role.admin)


def checked_policy(policy: PoolPolicy, prefix: tuple[str, ...]) -> PoolPolicy:
    """Both documents parsed with the models the agent uses; a 422 naming the field otherwise."""
    check_documents(policy.mig, policy.sharing, prefix)
    return policy


def _out(pool: Pool, hosts: int) -> PoolOut:
    return PoolOut(
        name=pool.name,
        description=pool.description,
        policy=PoolPolicy.model_validate(pool.policy),
        hosts=hosts,
        created_at=pool.created_at,
    )


@router.get("", response_model=list[PoolOut])
def list_pools(_: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> list[PoolOut]:
    with db.session() as session:
        counts = dict(session.execute(select(Host.pool_id, func.count()).group_by(Host.pool_id)).all())
        return [_out(p, counts.get(p.id, 0)) for p in session.scalars(select(Pool).order_by(Pool.name))]


@router.post("", response_model=PoolOut, status_code=201)
def create_pool(body: PoolIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> PoolOut:
    policy = checked_policy(body.policy, ("body", "policy"))
    with audit.mutation(db, principal, "pool.create", body.name) as (session, _):
        if session.scalar(select(Pool).where(Pool.name == body.name)) is not None:
            raise conflict(f"pool {body.name} already exists")
        pool = Pool(name=body.name, description=body.description, policy=policy.model_dump(mode="json"))
        session.add(pool)
        session.flush()
        return _out(pool, 0)


def _pool(session: Session, name: str) -> Pool:
    pool = session.scalar(select(Pool).where(Pool.name == name))
    if pool is None:
        raise not_found(f"pool {name}")
    return pool


@router.get("/{name}", response_model=PoolOut)
def get_pool(name: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> PoolOut:
    with db.session() as session:
        pool = _pool(session, name)
        hosts = session.scalar(select(func.count()).select_from(Host).where(Host.pool_id == pool.id)) or 0
        return _out(pool, hosts)


@router.put("/{name}/policy", response_model=PoolOut)
def set_pool_policy(
    name: str, body: PoolPolicy, request: Request, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> PoolOut:
    """Replace the pool's policy; hosts in the pool converge to it unless they override a field."""
    policy = checked_policy(body, ("body",))
    with audit.mutation(db, principal, "pool.set-policy", name, {"policy": policy.model_dump(mode="json")}) as (
        session,
        _,
    ):
        pool = _pool(session, name)
        if policy.mig is not None:
            # The pool's hosts that follow its MIG layout will apply it: it must fit their GPUs.
            check_mig_on_gpus(policy.mig, gpus_of(session, pool_hosts_following_mig(session, pool.id)), ("body",))
        pool.policy = policy.model_dump(mode="json")
        # The policy is every pool host's desired state and on_demand_mig changes what placement may do there:
        # the change feed stamps all of them at commit (controller.store.changes).
        mark_pool_changed(session, pool.id)
        hosts = session.scalar(select(func.count()).select_from(Host).where(Host.pool_id == pool.id)) or 0
        out = _out(pool, hosts)
    request.app.state.leases.sync(force=True)
    return out


@router.delete("/{name}", status_code=204)
def delete_pool(name: str, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> Response:
    with audit.mutation(db, principal, "pool.delete", name) as (session, _):
        pool = _pool(session, name)
        if session.scalar(select(Host.id).where(Host.pool_id == pool.id).limit(1)) is not None:
            raise conflict(f"pool {name} still has hosts; move them out first")
        session.delete(pool)
    return Response(status_code=204)
