"""The lease service: one facade over the parts of a lease's life, each in its own module.

* :mod:`controller.leases.index`: this replica's placement engine, built from the store, kept current through the
  host change feed;
* :mod:`controller.leases.quotas`: the tenant's limits the engine decides with, and the store's check at commit;
* :mod:`controller.leases.claims`: deciding, claiming in the engine and in the store (atomic across replicas);
* :mod:`controller.leases.provisioning`: driving a claimed lease to ``ready`` through its backend;
* :mod:`controller.leases.mig_binding`: MIG instances an agent created on demand, bound to their leases;
* :mod:`controller.leases.release`, :mod:`controller.leases.expiry`, :mod:`controller.leases.recovery`:
  releasing, expiring, and finishing what a crash left half-way (owner and deadline:
  :mod:`controller.leases.ownership`).

The API routes and jobs call only this class.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from controller.auth.tokens import Principal
from controller.backends.registry import BackendRegistry
from controller.leases import expiry
from controller.leases.access import AccessVault
from controller.leases.claims import Claims, IdempotencyRace, parse_lease_request, request_hash
from controller.leases.errors import LeaseNotFound, PlacementContended
from controller.leases.faults import crash_point
from controller.leases.index import SYNC_INTERVAL_S, PlacementIndex
from controller.leases.liveness import LeaseTimeouts
from controller.leases.metrics import Stats
from controller.leases.mig_binding import MigBinding
from controller.leases.ownership import Ownership
from controller.leases.provisioning import Provisioning
from controller.leases.quotas import TenantQuotas
from controller.leases.recovery import Recovery
from controller.leases.release import Releases
from controller.leases.state import TRANSITIONAL
from controller.placement import Engine
from controller.placement.catalog import OfferCount, OfferGroup
from controller.store.db import Database
from controller.store.models import Host as HostRow
from controller.store.models import Lease, LeaseTransition


@dataclass(frozen=True)
class CreatedLease:
    """What ``create`` made, or found for a replayed Idempotency-Key: the lease as stored when ``create`` returned
    (``ready``, ``provisioning`` while something outside acts, or ``failed``) with its transitions."""

    lease: Lease
    transitions: list[LeaseTransition]
    created: bool  # False: an idempotent replay


class LeaseService:
    def __init__(
        self,
        db: Database,
        *,
        backends: BackendRegistry,
        owner: str | None = None,
        timeouts: LeaseTimeouts | None = None,
        access: AccessVault | None = None,
    ) -> None:
        self.db = db
        # Seals and opens what ready leases hand out (controller.leases.access); create_app gives the configured key.
        self.access = access or AccessVault.ephemeral()
        self.backends = backends  # the app's backend kinds (controller.backends.registry)
        self.stats = Stats()
        self.ownership = Ownership(owner or f"leases-{uuidlib.uuid4().hex[:12]}", timeouts or LeaseTimeouts())
        self.quotas = TenantQuotas(db)
        self.engine = Engine(quota=self.quotas.check)
        self.index = PlacementIndex(db, self.engine, backends.capabilities)
        self.claims = Claims(db, self.index, self.quotas, self.ownership, self.stats)
        self.releases = Releases(db, self.ownership, self.claims, self.stats, backends)
        self.provisioning = Provisioning(db, self.ownership, self.claims, self.releases, backends, self.access)
        self.mig_binding = MigBinding(db, self.index, self.provisioning)
        self.recovery = Recovery(db, self.ownership, self.provisioning, self.releases)

    @property
    def owner(self) -> str:
        return self.ownership.owner

    @property
    def timeouts(self) -> LeaseTimeouts:
        return self.ownership.timeouts

    # --- the index -------------------------------------------------------------------------------------------

    def load(self) -> LeaseService:
        """Build the index from the store: every host, device, MIG instance and live claim."""
        self.index.load()
        return self

    def sync(self, *, force: bool = False, min_interval_s: float = SYNC_INTERVAL_S) -> int:
        """Reload the hosts changed in the store since the index loaded them; returns how many."""
        return self.index.sync(force=force, min_interval_s=min_interval_s)

    def host_changed(self, hostname: str) -> None:
        """After a write to one host (inventory, admin state, pool): reload it and finish pending leases."""
        with self.db.session() as session:
            hid = session.scalar(select(HostRow.id).where(HostRow.hostname == hostname))
        if hid is None:
            if hostname in self.engine.index.hosts:
                self.engine.remove_host(hostname)
            return
        self.index.refresh([hid])
        self.mig_binding.complete_pending(hid)

    def hosts_changed(self, hostnames: Iterable[str]) -> None:
        for name in hostnames:
            self.host_changed(name)

    def quotas_changed(self, tenant: str) -> None:
        """This replica changed the tenant's limits: decide with them at once."""
        self.quotas.changed(tenant)

    def offers(self) -> dict[OfferGroup, OfferCount]:
        """What the fleet can hand out now (free units by backend, region, kind, model, profile), after catching up
        with other replicas' writes."""
        self.sync()
        return self.engine.catalog()

    # --- a lease's life ---------------------------------------------------------------------------------------

    def dry_run(self, body: dict[str, Any], tenant: str) -> dict[str, Any]:
        return self.claims.dry_run(body, tenant)

    def create(
        self, body: dict[str, Any], tenant: str, principal: Principal | None, idempotency_key: str | None = None
    ) -> CreatedLease:
        """Place, claim and provision a lease; returns the lease it made (or, for a replayed Idempotency-Key with
        the same request, the one made before)."""
        req = parse_lease_request(body)
        req_hash = request_hash(req)
        existing = self.claims.find_idempotent(tenant, idempotency_key, req_hash)
        if existing is not None:
            if existing.state in TRANSITIONAL:
                self.recovery.recover_one(existing.id)  # a replay of a lease its creator left behind drives it on
            return self._stored(existing.id, created=False)
        lease_id = uuidlib.uuid4().hex
        try:
            self.claims.claim_new(lease_id, req, req_hash, tenant, principal, idempotency_key)
        except IdempotencyRace:
            again = self.claims.find_idempotent(tenant, idempotency_key, req_hash)
            if again is None:  # pragma: no cover - the unique constraint said it exists
                raise PlacementContended("idempotency key race; retry") from None
            return self._stored(again.id, created=False)
        crash_point("create.claimed")
        self.provisioning.provision(lease_id)
        return self._stored(lease_id, created=True)

    def _stored(self, lease_id: str, *, created: bool) -> CreatedLease:
        with self.db.session() as session:
            lease = session.get(Lease, lease_id)
            if lease is None:  # pragma: no cover - leases are never deleted
                raise LeaseNotFound(f"lease {lease_id} not found")
            transitions = session.scalars(
                select(LeaseTransition).where(LeaseTransition.lease_id == lease_id).order_by(LeaseTransition.id)
            )
            return CreatedLease(lease, list(transitions), created)

    def reprovision(self, lease_id: str) -> None:
        """Ask the lease's backend again (idempotent): for a ``provisioning`` lease after something outside
        moved (an agent reported, a node registered, the controller restarted); any other state is left alone."""
        self.provisioning.provision(lease_id)

    def release(self, lease_id: str, principal: Principal | None, reason: str = "released by the tenant") -> None:
        self.releases.release(lease_id, principal, reason)

    def expire(self, now: datetime | None = None) -> list[str]:
        """Release every lease whose ``duration`` is over; returns their ids (the lease-expiry hook)."""
        return expiry.expire(self.db, self.releases, now)

    # --- recovery ---------------------------------------------------------------------------------------------

    def driving(self, lease_id: str) -> bool:
        return self.ownership.driving(lease_id)

    def stranded(self, now: datetime | None = None) -> list[str]:
        return self.recovery.stranded(now)

    def recover(self, now: datetime | None = None) -> dict[str, str]:
        return self.recovery.recover(now)

    def recover_one(self, lease_id: str, now: datetime | None = None) -> str | None:
        return self.recovery.recover_one(lease_id, now)
