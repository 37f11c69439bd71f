"""The ``fake`` backend: hosts that run the agent (simulated NVML, usually) behind a pretend cloud.

Every slice kind is handed out, vGPUs included: a pretend hypervisor "attaches" them, answering with an mdev UUID
derived from the lease, the device and the slot (marked ``simulated``), so the demo's vGPU host can be leased end
to end. Whole GPUs, shares and MIG instances behave as on a static host (a MIG instance created on demand is ready
once the host's agent reports it). ``no_valid_host`` in the backend's config makes provisioning on those hosts
answer "no valid host": the lease service places the lease again without them, as it does for Nova.

Nothing outside is called: no sync, reconcile, checks or NCCL runner (the agents report the hosts and run
nccl-tests, as on static hosts). Not served unless named in ``backend_kinds`` (``GPUFABRIC_BACKEND_KINDS``).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from controller.backends.agent_access import reported_access
from controller.backends.contract import BackendBase, Capabilities, LeaseInfo, ProvisionResult, TryElsewhere
from controller.backends.fake.config import FakeConfig
from controller.backends.slices import describe_slices
from controller.placement import Allocation
from controller.store.db import Database
from controller.store.models import Backend, Host

_MDEV_NAMESPACE = uuid.UUID("6f1c7a52-8d1e-4c4b-9a38-5a0e3f5b7c11")
_AGENTS = "fake hosts register themselves through their agents"


class FakeBackend(BackendBase):
    kind = "fake"
    description = "Simulated hosts behind a pretend cloud (the demo, tests): every slice kind, vGPUs included"
    config_model = FakeConfig
    capabilities = Capabilities(
        access="simulated: the hosts' GPUs and MIG instances by UUID with CUDA_VISIBLE_DEVICES, and vGPU instances "
        "with made-up mdev UUIDs (marked simulated); nothing is attached",
        waits_on_agents=True,
        validation="the hosts' agents run nccl-tests (simulated NCCL output on simulated hosts)",
        unsupported={
            "sync": f"{_AGENTS}: there is nothing to discover",
            "reconcile": "nothing outside is provisioned: there is no drift to look for",
            "checks": "a fake backend calls nothing outside; its hosts' health comes from their agents",
            "nccl": "agents run nccl-tests on fake hosts; no cluster job runner",
        },
    )

    def __init__(self, db: Database) -> None:
        self.db = db

    def _no_valid_host(self, hostnames: list[str]) -> set[str]:
        """Those of ``hostnames`` their fake backend's config names in ``no_valid_host``."""
        with self.db.session() as session:
            rows = session.execute(
                select(Host.hostname, Backend.config)
                .join(Backend, Host.backend_id == Backend.id)
                .where(Host.hostname.in_(hostnames), Backend.kind == self.kind)
            ).all()
        return {name for name, config in rows if name in FakeConfig.model_validate(config or {}).no_valid_host}

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        refused = sorted(self._no_valid_host(sorted({a.host_id for a in allocations})))
        if refused:
            raise TryElsewhere(f"no valid host was found ({', '.join(refused)}: fake backend's no_valid_host)", refused)

        def attach(a: Allocation) -> dict[str, Any]:
            instances = [
                str(uuid.uuid5(_MDEV_NAMESPACE, f"{lease.id}/{a.device_uuid}/{a.vgpu_type}/{i}"))
                for i in range(a.units)
            ]
            return {"vgpu_type": a.vgpu_type, "mdev_uuids": instances, "simulated": True}

        access = reported_access(self.db, (a.host_id for a in allocations))
        return describe_slices(self.kind, allocations, attach, lease.id, access)

    def release(self, lease: LeaseInfo) -> None:
        # Nothing was attached anywhere: the claims the caller frees are all there is.
        return None
