"""Once per agent cycle on a Kubernetes node: follow ``nvidia.com/mig.config``, then apply the node's labels.

The labels are the ones ``gpufabric-agent labels`` prints (GFD's ``nvidia.com/*`` names and ``gpufabric.io/*``)
plus ``nvidia.com/mig.config.state`` once the mig.config workflow ran. They are written by server-side apply
under the field manager ``gpufabric-agent`` and only when they differ from what the Node holds (a GET per
cycle, an apply only on change); a label the agent no longer computes is deleted by that apply. The Kubernetes
API being unreachable is logged and retried next cycle; it never stops the agent's reports to the controller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.converge import leased_instances
from agent.kube import KubeNodeConfig
from agent.kube.mig_label import MIG_CONFIG_STATE_LABEL, MigConfigLabel
from agent.labels import node_labels, pci_gpu_mode
from agent.sharing.config import DevicePluginConfig
from drivers.contract.inventory import Inventory
from drivers.contract.protocol import DesiredState
from drivers.kube import KubeNodeError, NodeApi, NodeLabels, invalid_label, node_api_configuration

log = logging.getLogger("gpufabric.agent.kube")


class NodeSync:
    def __init__(self, api: NodeApi, config: KubeNodeConfig, *, simulated: bool) -> None:
        self.api = api
        self.config = config
        self.simulated = simulated
        self.mig_label = MigConfigLabel(config.mig_config_file) if config.mig_config_file is not None else None
        self.node: NodeLabels | None = None
        self._refused: set[str] = set()

    @classmethod
    def connect(cls, config: KubeNodeConfig, *, simulated: bool) -> NodeSync:
        """Raises KubeNodeError when no client configuration can be built (e.g. ``on`` outside a pod)."""
        configuration = node_api_configuration(api_url=config.api_url, kubeconfig=config.kubeconfig)
        return cls(NodeApi(configuration, config.node_name), config, simulated=simulated)

    def close(self) -> None:
        self.api.close()

    def labels(self, inventory: Inventory, sharing: DevicePluginConfig | None) -> dict[str, str]:
        """What this agent owns on its Node now: the computed labels (valid ones) and the mig.config state."""
        computed = node_labels(
            inventory,
            sharing=sharing,
            mig_strategy=self.config.mig_strategy,
            gpu_mode=None if self.simulated else pci_gpu_mode(inventory),
        )
        if self.mig_label is not None and self.mig_label.state is not None:
            computed[MIG_CONFIG_STATE_LABEL] = self.mig_label.state
        valid = {}
        for key, value in computed.items():
            problem = invalid_label(key, value)
            if problem is None:
                valid[key] = value
            elif key not in self._refused:
                self._refused.add(key)
                log.warning("not writing a label the API server would refuse: %s", problem)
        return valid

    def apply(self, wanted: dict[str, str]) -> None:
        """Server-side apply ``wanted`` unless the Node already holds exactly that as this agent's."""
        if self.node is not None and self.node.matches(wanted):
            return
        before = self.node
        self.node = self.api.apply_labels(wanted)
        if before is not None:
            added = len(set(wanted) - before.owned)
            removed = len(before.owned - set(wanted))
            changed = sum(1 for k, v in wanted.items() if k in before.owned and before.labels.get(k) != v)
            log.info(
                "node %s labels applied: %d added, %d changed, %d removed",
                self.config.node_name,
                added,
                changed,
                removed,
            )

    def sync(
        self,
        inventory: Inventory,
        *,
        desired: DesiredState | None,
        sharing: DevicePluginConfig | None,
        sim_host: Any | None,
        collect: Callable[[], Inventory],
    ) -> Inventory | None:
        """Follow the mig.config label, then apply the labels. Returns the new inventory when GPUs changed
        (the caller reports it), else None. NVML must be open. Kubernetes API failures are logged, not raised."""
        try:
            self.node = self.api.read()
        except KubeNodeError as exc:
            log.warning("%s; node labels and %s wait for the next cycle", exc, "nvidia.com/mig.config")
            return None
        updated: Inventory | None = None
        if self.mig_label is not None:
            controller_mig = desired.mig if desired is not None else None
            value = self.mig_label.due(self.node.labels, controller_mig)
            if value is not None:
                changed = self.mig_label.run(
                    value,
                    controller_mig=controller_mig,
                    leased=leased_instances(desired, inventory) if desired is not None else {},
                    sim_host=sim_host,
                    announce_pending=lambda: self.apply(self.labels(inventory, sharing)),
                )
                if changed:
                    inventory = updated = collect()
        try:
            self.apply(self.labels(inventory, sharing))
        except KubeNodeError as exc:
            self.node = None  # read again next cycle
            log.warning("%s; retrying next cycle", exc)
        return updated
