"""Ironic: GPU bare-metal nodes (whole-node passthrough) - discovery, deploy with a config drive, undeploy.

Every node gpufabric deploys carries ``extra.gpufabric_lease = <lease id>`` (and the same key in ``instance_info``)
so reconciliation can find it. States are polled with the caller's ``PollPolicy``; openstacksdk's ``wait=True``
polls every 2 s and is never used. A node that fails (``deploy failed``, ``clean failed``, ``error``, or the deadline)
is put into maintenance with the reason and the call raises ``ProvisioningFailed`` carrying it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from drivers.openstack.configdrive import ironic_config_drive
from drivers.openstack.connection import service
from drivers.openstack.errors import (
    OpenStackCallFailed,
    ProvisioningFailed,
    ProvisioningTimeout,
    ResourceNotFound,
    sdk_call,
)
from drivers.openstack.gpus import NVIDIA_VENDOR_ID, model_token, product_for_label, product_for_name, product_for_pci
from drivers.openstack.host_keys import HOST_KEY_TAG
from drivers.openstack.models import (
    LEASE_TAG,
    DiscoveredHost,
    GpuDevice,
    IronicDeployRequest,
    ProvisionedNode,
    ReleasedNode,
    TaggedResource,
)
from drivers.openstack.polling import PollPolicy, PollTimeout, poll

log = logging.getLogger(__name__)

FAILED_STATES = frozenset({"deploy failed", "clean failed", "error", "inspect failed", "service failed"})
# Ironic states a deploy / undeploy passes through on its way; anything else while waiting is a failure.
DEPLOYING_STATES = frozenset({"deploying", "wait call-back", "available"})
UNDEPLOYING_STATES = frozenset({"deleting", "cleaning", "clean wait", "active", "deleted"})
# A capability key that names the GPU model / count (``properties.capabilities = "gpu_model:H100,gpu_count:8"``).
CAP_MODEL_KEYS = ("gpu_model", "gpu")
CAP_COUNT_KEYS = ("gpu_count", "gpus")
# The Ironic microversion needed: dict config drives (1.56), node inventory (1.81).
MIN_API_VERSION = "1.81"


def parse_capabilities(value: Any) -> dict[str, str]:
    """``properties.capabilities``: Ironic's ``"k1:v1,k2:v2"`` string (a dict is accepted too)."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    if isinstance(value, str):
        for part in value.split(","):
            if ":" in part:
                k, v = part.split(":", 1)
                out[k.strip()] = v.strip()
    return out


def pci_devices_from_inventory(inventory: dict[str, Any] | None) -> list[dict[str, Any]]:
    """NVIDIA PCI devices from a ``GET /v1/nodes/{node}/inventory`` document.

    ironic-python-agent's ``pci-devices`` collector puts ``pci_devices`` in the plugin data (older deployments in
    the inventory itself); each entry has ``vendor_id``/``product_id`` as hex strings and ``bus``.
    """
    if not inventory:
        return []
    found: list[dict[str, Any]] = []
    for section in (inventory.get("inventory") or {}, inventory.get("plugin_data") or {}, inventory):
        for dev in section.get("pci_devices") or []:
            try:
                vendor = int(str(dev.get("vendor_id", "0")), 16)
            except ValueError:
                continue
            if vendor == NVIDIA_VENDOR_ID and str(dev.get("class", "03")).startswith("03"):
                found.append(dev)
        if found:
            break
    return sorted(found, key=lambda d: str(d.get("bus", "")))


def host_from_node(node: Any, inventory: dict[str, Any] | None = None) -> DiscoveredHost:
    """A ``DiscoveredHost`` from an SDK node (or a dict with the same keys) and its inspection inventory.

    Devices come from the inventory's NVIDIA PCI devices when there are any; otherwise the count comes from the
    capabilities (``gpu_count``) and the model from the capabilities (``gpu_model``), a ``CUSTOM_GPU_*`` trait or
    the resource class (``baremetal-gpu-h100``).
    """
    get = node.get if isinstance(node, dict) else lambda k, d=None: getattr(node, k, d)
    properties = dict(get("properties") or {})
    capabilities = parse_capabilities(properties.get("capabilities"))
    traits = sorted(get("traits") or [])
    resource_class = get("resource_class")
    extra = dict(get("extra") or {})
    instance_info = dict(get("instance_info") or {})

    named = None
    for key in CAP_MODEL_KEYS:
        if capabilities.get(key):
            named = product_for_name(capabilities[key])
            break
    if named is None:
        for trait in traits:
            if (named := product_for_label(trait)) is not None:
                break
    if named is None and resource_class:
        named = product_for_label(resource_class)

    devices: list[GpuDevice] = []
    for i, dev in enumerate(pci_devices_from_inventory(inventory)):
        product = product_for_pci(str(dev.get("vendor_id")), str(dev.get("product_id")))
        devices.append(
            GpuDevice(
                index=i,
                model=product.model if product else None,
                product_name=product.name if product else None,
                memory_mib=product.memory_mib if product else None,
                pci_address=dev.get("bus"),
                vendor_id=str(dev.get("vendor_id")).lower().removeprefix("0x"),
                device_id=str(dev.get("product_id")).lower().removeprefix("0x"),
                source="inspection",
            )
        )
    if not devices:
        count = 0
        for key in CAP_COUNT_KEYS:
            if str(capabilities.get(key, "")).isdigit():
                count = int(capabilities[key])
                break
        if count == 0 and str(properties.get("gpu_count", "")).isdigit():
            count = int(properties["gpu_count"])
        source = "capabilities" if count else ("trait" if any(model_token(t) for t in traits) else "resource_class")
        if count == 0 and named is not None:
            count = 1  # a GPU-named node with no count: at least one GPU, say so rather than guess 8
        for i in range(count):
            devices.append(
                GpuDevice(
                    index=i,
                    model=named.model if named else None,
                    product_name=named.name if named else None,
                    memory_mib=named.memory_mib if named else None,
                    source=source,  # type: ignore[arg-type]
                )
            )
    models = {d.model for d in devices if d.model}
    model = models.pop() if len(models) == 1 else (named.model if named else None)
    return DiscoveredHost(
        node_id=str(get("id")),
        name=str(get("name") or get("id")),
        resource_class=resource_class,
        traits=traits,
        properties=properties,
        capabilities=capabilities,
        provision_state=get("provision_state"),
        power_state=get("power_state"),
        maintenance=bool(get("is_maintenance", get("maintenance", False))),
        maintenance_reason=get("maintenance_reason"),
        model=model,
        devices=devices,
        lease_id=extra.get(LEASE_TAG) or instance_info.get(LEASE_TAG),
        instance_uuid=get("instance_id", get("instance_uuid")),
        conductor_group=str(get("conductor_group") or "") or None,
    )


def is_gpu_node(host: DiscoveredHost, resource_class_prefix: str = "baremetal-gpu") -> bool:
    rc = (host.resource_class or "").lower()
    return bool(host.devices) or rc.startswith(resource_class_prefix) or any(model_token(t) for t in host.traits)


class IronicDriver:
    """Ironic operations gpufabric needs, over an ``openstack.connection.Connection``.

    ``clean_on_release``: undeploy runs automated cleaning when the deployment enables it (``[conductor]
    automated_clean``); with True the driver also waits through ``cleaning`` to ``available``.
    """

    def __init__(
        self,
        conn: Any,
        *,
        resource_class_prefix: str = "baremetal-gpu",
        read_inventory: bool = True,
        clean_on_release: bool = True,
    ) -> None:
        self.conn = conn
        self.baremetal = service(conn, "baremetal")
        self.resource_class_prefix = resource_class_prefix
        self.read_inventory = read_inventory
        self.clean_on_release = clean_on_release

    # ------------------------------------------------------------------------------------------- discovery

    def _inventory(self, node_id: str) -> dict[str, Any] | None:
        if not self.read_inventory:
            return None
        import openstack.exceptions as osexc

        try:
            data = self.baremetal.get_node_inventory(node_id)
        except osexc.NotFoundException:
            return None  # never inspected (404 "inventory not found")
        except osexc.HttpException as e:
            if e.status_code in (400, 406):  # server too old for the inventory API
                return None
            raise OpenStackCallFailed("get_node_inventory", str(e), e.status_code) from e
        return dict(data) if data else None

    def discover(self, all_nodes: bool = False) -> list[DiscoveredHost]:
        """Every GPU node (by resource class prefix, ``CUSTOM_GPU_*`` trait, capabilities or inspected GPUs).

        ``all_nodes`` returns non-GPU nodes too.
        """
        out = []
        for node in self._list_nodes():
            host = host_from_node(node, self._inventory(node.id))
            if all_nodes or is_gpu_node(host, self.resource_class_prefix):
                out.append(host)
        return out

    def host(self, node: str) -> DiscoveredHost:
        raw = self._get(node)
        return host_from_node(raw, self._inventory(raw.id))

    def _list_nodes(self) -> Iterable[Any]:
        return self._call("nodes", lambda: list(self.baremetal.nodes(details=True)))

    def _get(self, node: str) -> Any:
        import openstack.exceptions as osexc

        try:
            return self.baremetal.get_node(node)
        except osexc.NotFoundException as e:
            raise ResourceNotFound(f"Ironic node {node} not found") from e
        except osexc.HttpException as e:
            raise OpenStackCallFailed("get_node", str(e), e.status_code) from e

    @staticmethod
    def _call(operation: str, fn: Any) -> Any:
        return sdk_call(operation, fn)

    # ------------------------------------------------------------------------------------------- provision

    def provision(self, request: IronicDeployRequest, wait: bool = True) -> ProvisionedNode:
        """Deploy ``request.node`` for the lease and wait (your poll policy) until ``active``.

        Idempotent: a node already ``active`` with this lease's tag is returned as is; one deploying for it is waited
        for. A node that belongs to another lease, is in maintenance, or is not ``available`` raises
        ``ProvisioningFailed`` without being touched. A failed deploy or a timeout puts the node into maintenance with
        the reason and raises ``ProvisioningFailed`` / ``ProvisioningTimeout``.

        ``wait=False`` starts the deploy (or looks at the one running for this lease) and returns at once with the
        node's current ``provision_state``; call again to follow it. A deploy of this lease that ended in a failure
        state puts the node into maintenance and raises ``ProvisioningFailed``; the deadline is then the caller's.
        """
        node = self._get(request.node)
        owner = (node.extra or {}).get(LEASE_TAG) or (node.instance_info or {}).get(LEASE_TAG)
        if owner and owner != request.lease_id:
            raise ProvisioningFailed(node.id, f"node is tagged for lease {owner}", node.provision_state)
        if owner == request.lease_id and node.provision_state == "active":
            return self._provisioned(node, request.lease_id)
        if owner == request.lease_id and node.provision_state in DEPLOYING_STATES - {"available"}:
            return self._wait_active(node.id, request) if wait else self._in_progress(node, request.lease_id)
        if owner == request.lease_id and node.provision_state in FAILED_STATES:
            reason = node.last_error or f"deploy ended in {node.provision_state}"
            self.fail_node(node.id, f"gpufabric lease {request.lease_id}: deploy failed: {reason}")
            raise ProvisioningFailed(node.id, reason, node.provision_state)
        if node.is_maintenance:
            raise ProvisioningFailed(
                node.id, f"node is in maintenance: {node.maintenance_reason or 'no reason given'}", node.provision_state
            )
        if node.provision_state != "available":
            raise ProvisioningFailed(node.id, f"node is {node.provision_state}, not available", node.provision_state)

        instance_info: dict[str, Any] = {
            **(node.instance_info or {}),
            "image_source": request.image_source,
            "root_gb": str(request.root_gb),
            LEASE_TAG: request.lease_id,
        }
        if request.image_checksum:
            instance_info["image_checksum"] = request.image_checksum
        extra = {**(node.extra or {}), LEASE_TAG: request.lease_id}
        if request.bootstrap.ssh_host_key is not None:
            extra[HOST_KEY_TAG] = request.bootstrap.ssh_host_key.public
        self._call("update_node", lambda: self.baremetal.update_node(node, instance_info=instance_info, extra=extra))
        drive = ironic_config_drive(request.lease_id, node.id, node.name or node.id, request.bootstrap)
        try:
            self._call(
                "set_node_provision_state(active)",
                lambda: self.baremetal.set_node_provision_state(node.id, "active", config_drive=drive, wait=False),
            )
        except OpenStackCallFailed as e:
            self._untag(node.id)
            raise ProvisioningFailed(node.id, f"deploy refused: {e.message}", node.provision_state) from e
        if not wait:
            return self._in_progress(self._get(node.id), request.lease_id)
        return self._wait_active(node.id, request)

    def _in_progress(self, node: Any, lease_id: str) -> ProvisionedNode:
        if node.provision_state == "active":
            return self._provisioned(node, lease_id)
        return ProvisionedNode(
            node_id=node.id, name=node.name or node.id, lease_id=lease_id, provision_state=node.provision_state or ""
        )

    def _wait_active(self, node_id: str, request: IronicDeployRequest) -> ProvisionedNode:
        def done(n: Any) -> bool:
            if n.provision_state == "active":
                return True
            if n.provision_state in FAILED_STATES:
                raise ProvisioningFailed(
                    node_id, n.last_error or f"deploy ended in {n.provision_state}", n.provision_state
                )
            return False

        try:
            node = poll(lambda: self._get(node_id), done, request.poll)
        except ProvisioningFailed as e:
            self.fail_node(node_id, f"gpufabric lease {request.lease_id}: deploy failed: {e.reason}")
            raise
        except PollTimeout as e:
            state = getattr(e.last, "provision_state", None)
            reason = (
                f"gpufabric lease {request.lease_id}: deploy did not reach active within "
                f"{request.poll.timeout_s:g} s (last state {state})"
            )
            self.fail_node(node_id, reason)
            raise ProvisioningTimeout(node_id, reason, state) from None
        return self._provisioned(node, request.lease_id)

    def _provisioned(self, node: Any, lease_id: str) -> ProvisionedNode:
        return ProvisionedNode(
            node_id=node.id,
            name=node.name or node.id,
            lease_id=lease_id,
            provision_state=node.provision_state,
            addresses=self.addresses(node.id),
            host_public_key=(node.extra or {}).get(HOST_KEY_TAG),
        )

    def addresses(self, node_id: str) -> list[str]:
        """The node's addresses: ``instance_info.ip_address``/``ipv4_address``/``fixed_ips`` when the deployment
        records them (metalsmith, Nova), the ports' IPs from ``internal_info``, else the ports' MACs."""
        node = self._get(node_id)
        info = node.instance_info or {}
        found: list[str] = []
        for key in ("ip_address", "ipv4_address", "ipv6_address", "access_ip_v4", "access_ip_v6"):
            if info.get(key):
                found.append(str(info[key]))
        for ip in info.get("fixed_ips") or []:
            found.append(str(ip.get("ip_address") if isinstance(ip, dict) else ip))
        ports = self._call("ports", lambda: list(self.baremetal.ports(node_id=node_id, details=True)))
        for port in ports:
            internal = port.internal_info or {}
            if internal.get("ip_address"):
                found.append(str(internal["ip_address"]))
        if not found:
            found = [f"mac:{p.address}" for p in ports if p.address]
        return list(dict.fromkeys(found))

    def fail_node(self, node_id: str, reason: str) -> None:
        """Put the node into maintenance with ``reason`` (best effort: the reason is also in the raised error)."""
        try:
            self.baremetal.set_node_maintenance(node_id, reason=reason[:255])
        except Exception as e:  # the original failure matters more than this one
            log.warning("could not put Ironic node %s into maintenance (%s): %s", node_id, reason, e)

    # ------------------------------------------------------------------------------------------- release

    def release(self, node: str, poll_policy: PollPolicy, lease_id: str | None = None) -> ReleasedNode:
        """Undeploy the node (cleaning when the deployment enables it) and wait until ``available``.

        With ``lease_id`` a node tagged for another lease is refused. A node already ``available`` (released before)
        just loses its tag. A failed undeploy puts the node into maintenance and raises ``ProvisioningFailed``.
        """
        raw = self._get(node)
        owner = (raw.extra or {}).get(LEASE_TAG) or (raw.instance_info or {}).get(LEASE_TAG)
        if lease_id is not None and owner not in (None, lease_id):
            raise ProvisioningFailed(raw.id, f"node is tagged for lease {owner}, not {lease_id}", raw.provision_state)
        cleaned = False
        if raw.provision_state in ("active", "deploy failed", "wait call-back", "error"):
            if raw.provision_state == "wait call-back":
                # A deploy waiting for its agent cannot be undeployed directly: abort it first (-> deploy failed).
                self._call("abort", lambda: self.baremetal.set_node_provision_state(raw.id, "abort"))
            if raw.is_maintenance:
                self._call("unset_node_maintenance", lambda: self.baremetal.unset_node_maintenance(raw.id))
            self._call("set_node_provision_state(deleted)", lambda: self._undeploy(raw.id, poll_policy))
            seen: set[str] = set()

            def done(n: Any) -> bool:
                seen.add(n.provision_state)
                if n.provision_state == "available":
                    return True
                if n.provision_state in FAILED_STATES - {"deploy failed"} or (
                    n.provision_state == "deploy failed" and "deleting" in seen
                ):
                    raise ProvisioningFailed(
                        raw.id, n.last_error or f"undeploy ended in {n.provision_state}", n.provision_state
                    )
                return False

            try:
                poll(lambda: self._get(raw.id), done, poll_policy)
            except ProvisioningFailed as e:
                self.fail_node(raw.id, f"gpufabric: undeploy failed: {e.reason}")
                raise
            except PollTimeout as e:
                state = getattr(e.last, "provision_state", None)
                reason = f"gpufabric: undeploy did not reach available within {poll_policy.timeout_s:g} s (last state {state})"
                self.fail_node(raw.id, reason)
                raise ProvisioningTimeout(raw.id, reason, state) from None
            cleaned = bool({"cleaning", "clean wait"} & seen)
        elif raw.provision_state != "available":
            raise ProvisioningFailed(
                raw.id, f"cannot release a node in state {raw.provision_state}", raw.provision_state
            )
        self._untag(raw.id)
        final = self._get(raw.id)
        return ReleasedNode(
            node_id=final.id, name=final.name or final.id, provision_state=final.provision_state, cleaned=cleaned
        )

    def _undeploy(self, node_id: str, poll_policy: PollPolicy) -> None:
        # A node whose deploy is still running is locked for a moment ("Node is locked by host"): retry briefly.
        import openstack.exceptions as osexc

        def attempt() -> bool:
            try:
                self.baremetal.set_node_provision_state(node_id, "deleted")
                return True
            except osexc.ConflictException:
                return False

        try:
            poll(
                attempt,
                bool,
                PollPolicy(interval_s=min(poll_policy.interval_s, 1.0), timeout_s=min(poll_policy.timeout_s, 60)),
            )
        except PollTimeout:
            raise OpenStackCallFailed("set_node_provision_state(deleted)", "node stayed locked", 409) from None

    def _untag(self, node_id: str) -> None:
        node = self._get(node_id)
        patch = []
        for tag in (LEASE_TAG, HOST_KEY_TAG):
            if tag in (node.extra or {}):
                patch.append({"op": "remove", "path": f"/extra/{tag}"})
        if LEASE_TAG in (node.instance_info or {}):
            patch.append({"op": "remove", "path": f"/instance_info/{LEASE_TAG}"})
        if patch:
            self._call("patch_node", lambda: self.baremetal.patch_node(node_id, patch))

    # ------------------------------------------------------------------------------------------- reconciliation

    def tagged(self) -> list[TaggedResource]:
        """Every node carrying gpufabric's lease tag, whatever its state."""
        out = []
        for node in self._list_nodes():
            lease = (node.extra or {}).get(LEASE_TAG) or (node.instance_info or {}).get(LEASE_TAG)
            if lease:
                out.append(
                    TaggedResource(
                        kind="ironic_node",
                        id=node.id,
                        name=node.name or node.id,
                        lease_id=str(lease),
                        state=node.provision_state or "",
                        maintenance=bool(node.is_maintenance),
                    )
                )
        return out
