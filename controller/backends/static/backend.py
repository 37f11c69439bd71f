"""The ``static`` backend: hosts that only run the gpufabric agent (servers you own).

Nothing outside is called. A lease is ready once every slice it holds exists: whole GPUs, shared replicas and
existing MIG instances at once; a MIG instance created on demand once the host's agent has reported it (its
creation rides on the host's desired state, built from the store's claims, see ``controller.fleet.desired``).
The result names, per host, the devices and MIG UUIDs and the ``CUDA_VISIBLE_DEVICES`` value to use.
"""

from __future__ import annotations

from typing import Any

from controller.backends.contract import BackendBase, Capabilities, LeaseInfo, ProvisionFailed, ProvisionResult
from controller.backends.static.config import StaticConfig
from controller.placement import Allocation

_AGENTS = "static hosts register themselves through their agents"


class StaticBackend(BackendBase):
    kind = "static"
    description = "Hosts that only run the gpufabric agent"
    config_model = StaticConfig
    capabilities = Capabilities(
        access="the host's GPUs and MIG instances by UUID, with the CUDA_VISIBLE_DEVICES value to use",
        slice_kinds=frozenset({"gpu", "mig", "timeslice", "mps"}),
        why_not="vGPUs need a hypervisor backend (nova); a static host cannot attach them",
        validation="the hosts' agents run nccl-tests (POST /v1/validations with hosts)",
        unsupported={
            "sync": f"{_AGENTS}: there is nothing to discover",
            "reconcile": f"{_AGENTS} and nothing outside is provisioned: there is no drift to look for",
            "checks": "a static backend calls nothing outside; its hosts' health comes from their agents",
            "nccl": "agents run nccl-tests on static hosts; no cluster job runner",
        },
    )

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        waiting: list[str] = []
        hosts: dict[str, dict[str, Any]] = {}
        for a in allocations:
            if a.kind == "vgpu":
                raise ProvisionFailed(
                    f"{a.host_id}: vGPU {a.vgpu_type} needs a hypervisor backend (nova); a static host cannot attach it"
                )
            entry = hosts.setdefault(
                a.host_id, {"host": a.host_id, "devices": [], "mig_devices": [], "slices": [], "visible": []}
            )
            slice_doc: dict[str, Any] = {"kind": a.kind, "model": a.model, "device": a.device_uuid, "units": a.units}
            if a.kind == "mig":
                slice_doc["profile"] = a.profile
                if a.mig_uuid is None:
                    waiting.append(f"MIG {a.profile} on {a.device_uuid} ({a.host_id})")
                    continue
                slice_doc["mig_uuid"] = a.mig_uuid
                entry["mig_devices"].append(a.mig_uuid)
                entry["visible"].append(a.mig_uuid)
            else:
                if a.device_uuid not in entry["devices"]:
                    entry["devices"].append(a.device_uuid)
                    entry["visible"].append(a.device_uuid)
            entry["slices"].append(slice_doc)
        if waiting:
            return ProvisionResult("pending", message="waiting for the agent to create " + ", ".join(waiting))
        nodes = []
        for entry in hosts.values():
            visible = entry.pop("visible")
            entry["cuda_visible_devices"] = ",".join(visible)
            entry["env"] = {"CUDA_VISIBLE_DEVICES": entry["cuda_visible_devices"]}
            nodes.append(entry)
        result: dict[str, Any] = {"backend": self.kind, "nodes": nodes}
        if len(nodes) == 1:
            result["host"] = nodes[0]["host"]
            result["cuda_visible_devices"] = nodes[0]["cuda_visible_devices"]
        return ProvisionResult("ready", result)

    def release(self, lease: LeaseInfo) -> None:
        # Nothing to undo outside: the desired state is derived from live claims, which the caller releases.
        return None
