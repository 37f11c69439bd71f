"""What one EKS sync did (the answer of ``POST /v1/backends/{name}/sync``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.observability.redact import redact


@dataclass
class SyncReport:
    backend: str
    nodes: list[str] = field(default_factory=list)
    headroom: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    bound: dict[str, str] = field(default_factory=dict)  # lease id -> node
    changed: list[str] = field(default_factory=list)
    # Tenant namespaces whose lease holds nothing any more (a crash between the backend's work and the store's):
    # {"namespace", "lease", "lease_state", "action": "deleted" | "delete failed"}
    orphans: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # DescribeInstanceTopology this sync: instances asked of EC2, nodes labelled from it (asked now or remembered)
    instance_topology: dict[str, int] = field(default_factory=dict)
    karpenter: dict[str, dict[str, str]] = field(default_factory=dict)  # pool -> {kind: created|updated|unchanged}
    # Capacity-block nodegroups whose block AWS did not describe this sync (their hosts keep the last end known).
    unknown_blocks: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "nodes": self.nodes,
            "headroom": self.headroom,
            "removed": self.removed,
            "unreachable": self.unreachable,
            "bound": self.bound,
            "orphans": self.orphans,
            "instance_topology": self.instance_topology,
            "karpenter": self.karpenter,
            "errors": redact(self.errors),
        }
