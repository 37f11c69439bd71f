"""The inventory a node reports: NVML discovery, plus health states and the slices tenants can get.

Discovery (``agent.discovery``) only reads NVML. Health needs memory across observations (sticky
reasons, timestamps) and slice offers depend on the sharing policy the host runs, so both are
layered on here, in one place used by the CLI and the agent loop alike.
"""

from __future__ import annotations

from typing import Any

from agent.discovery import collect_inventory
from agent.health import HealthMonitor
from agent.sharing import DevicePluginConfig, annotate_offers, parse_config
from drivers.contract.inventory import Inventory


def sharing_from_document(document: dict[str, Any] | None) -> DevicePluginConfig | None:
    """The device-plugin config a desired state carries (None: no sharing)."""
    return parse_config(document, "controller") if document else None


def node_inventory(
    *,
    hostname: str | None,
    simulated: bool,
    monitor: HealthMonitor | None,
    sharing: DevicePluginConfig | None,
) -> Inventory:
    """Discover GPUs, attach each GPU's health (when a monitor is given) and its slice offers."""
    inventory = collect_inventory(hostname=hostname, simulated=simulated)
    if monitor is not None:
        inventory = monitor.annotate(inventory)
    return annotate_offers(inventory, sharing)
