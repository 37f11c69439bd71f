"""Checks of the desired-state documents in an admin write (host overrides, pool policies), as API errors.

Every write is parsed with the wire contract's models (``controller.fleet.policy``); a refusal is a 422
``validation-error`` whose ``errors[0].loc`` is the path of the offending field in the request body, e.g.
``["body", "mig", "config", "mig-configs", "all-1g", 0, "mig-devices", "1g.5gbb"]``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.api.problems import Problem
from controller.fleet.policy import DesiredStateError, GpuFacts, check_layout_fits, validate_mig, validate_sharing
from controller.store.models import DesiredOverride, Device, Host
from drivers.contract.protocol import MigDesired, SharingDesired


def desired_problem(exc: DesiredStateError, prefix: tuple[str, ...]) -> Problem:
    loc = [*prefix, *exc.loc]
    return Problem(422, "validation-error", str(exc), errors=[{"loc": loc, "msg": str(exc), "type": "value_error"}])


def check_documents(mig: MigDesired | None, sharing: SharingDesired | None, prefix: tuple[str, ...]) -> None:
    """Parse both documents (whatever the GPUs); raise a 422 ``Problem`` naming the field."""
    source = ".".join((*prefix[1:], "mig", "config"))
    try:
        if mig is not None:
            validate_mig(mig, source)
    except DesiredStateError as exc:
        raise desired_problem(exc, (*prefix, "mig")) from None
    try:
        if sharing is not None:
            validate_sharing(sharing)
    except DesiredStateError as exc:
        raise desired_problem(exc, (*prefix, "sharing")) from None


def gpus_of(session: Session, host_ids: Iterable[int]) -> list[GpuFacts]:
    rows = session.execute(
        select(Host.hostname, Device.index, Device.model)
        .join(Device, Device.host_id == Host.id)
        .where(Host.id.in_(list(host_ids)))
        .order_by(Host.hostname, Device.index)
    )
    return [GpuFacts(host=name, index=index, model=model) for name, index, model in rows]


def check_mig_on_gpus(mig: MigDesired, gpus: Iterable[GpuFacts], prefix: tuple[str, ...]) -> None:
    """The selected config against the GPUs it will be applied to (catalog facts); 422 naming the field."""
    source = ".".join((*prefix[1:], "mig", "config"))
    try:
        check_layout_fits(validate_mig(mig, source), mig.selected, gpus)
    except DesiredStateError as exc:
        raise desired_problem(exc, (*prefix, "mig")) from None


def pool_hosts_following_mig(session: Session, pool_id: int) -> list[int]:
    """Hosts of the pool whose MIG layout is the pool's (no host override of ``mig``)."""
    hosts = list(session.scalars(select(Host.id).where(Host.pool_id == pool_id)))
    # JSON null and SQL NULL both mean "no override": decided in Python, not in SQL.
    overrides = session.scalars(select(DesiredOverride).where(DesiredOverride.host_id.in_(hosts)))
    overridden = {o.host_id for o in overrides if o.mig is not None}
    return [h for h in hosts if h not in overridden]
