"""The ``static`` backend: hosts that only run the gpufabric agent (servers you own).

Nothing outside is called. A lease is ready once every slice it holds exists: whole GPUs, shared replicas and
existing MIG instances at once; a MIG instance created on demand once the host's agent has reported it (its
creation rides on the host's desired state, built from the store's claims, see ``controller.fleet.desired``).
The result names, per host, the devices and MIG UUIDs and the ``CUDA_VISIBLE_DEVICES`` value to use, and the
access the host's agent granted: where the agent enforces device access (``docs/security.md``) the lease waits
in ``provisioning`` until the agent reports that the lease's group may open exactly its device nodes.
"""

from __future__ import annotations

from typing import Any

from controller.backends.agent_access import reported_access
from controller.backends.contract import BackendBase, Capabilities, LeaseInfo, ProvisionFailed, ProvisionResult
from controller.backends.slices import describe_slices
from controller.backends.static.config import StaticConfig
from controller.placement import Allocation
from controller.store.db import Database

_AGENTS = "static hosts register themselves through their agents"


class StaticBackend(BackendBase):
    kind = "static"
    description = "Hosts that only run the gpufabric agent"
    config_model = StaticConfig
    capabilities = Capabilities(
        access="the host's GPUs and MIG instances by UUID, with the CUDA_VISIBLE_DEVICES value to use and, where the "
        "agent enforces device access, the Unix group that may open exactly the leased device nodes",
        slice_kinds=frozenset({"gpu", "mig", "timeslice", "mps"}),
        why_not="vGPUs need a hypervisor backend (nova); a static host cannot attach them",
        waits_on_agents=True,
        validation="the hosts' agents run nccl-tests (POST /v1/validations with hosts)",
        unsupported={
            "sync": f"{_AGENTS}: there is nothing to discover",
            "reconcile": f"{_AGENTS} and nothing outside is provisioned: there is no drift to look for",
            "checks": "a static backend calls nothing outside; its hosts' health comes from their agents",
            "nccl": "agents run nccl-tests on static hosts; no cluster job runner",
        },
    )

    def __init__(self, db: Database) -> None:
        self.db = db

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        access = reported_access(self.db, (a.host_id for a in allocations))
        return describe_slices(self.kind, allocations, self.attach_vgpu, lease.id, access)

    def attach_vgpu(self, a: Allocation) -> dict[str, Any]:
        """What a vGPU allocation hands out; a static host has no hypervisor to attach one."""
        raise ProvisionFailed(
            f"{a.host_id}: vGPU {a.vgpu_type} needs a hypervisor backend (nova); a static host cannot attach it"
        )

    def release(self, lease: LeaseInfo) -> None:
        # Nothing to undo outside: the desired state is derived from live claims, which the caller releases.
        return None
