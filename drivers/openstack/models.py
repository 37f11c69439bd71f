"""pydantic models in and out of the OpenStack driver (what the controller's backend adapters exchange)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from drivers.openstack.host_keys import SshHostKey
from drivers.openstack.polling import PollPolicy

LEASE_TAG = "gpufabric_lease"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuDevice(_Model):
    """One physical GPU found on an Ironic node (or implied by its resource class / traits / capabilities)."""

    index: int
    model: str | None = None  # catalog model, e.g. "H100-80GB"; None when unknown
    product_name: str | None = None  # catalog product name, e.g. "NVIDIA H100 80GB HBM3"
    memory_mib: int | None = None
    pci_address: str | None = None
    vendor_id: str | None = None  # "10de"
    device_id: str | None = None  # "2330"
    source: Literal["inspection", "capabilities", "resource_class", "trait"]


class DiscoveredHost(_Model):
    """A GPU bare-metal node in Ironic, as the controller indexes it."""

    backend: Literal["ironic"] = "ironic"
    node_id: str
    name: str
    resource_class: str | None = None
    traits: list[str] = Field(default_factory=list)
    properties: dict[str, Any] = Field(default_factory=dict)
    capabilities: dict[str, str] = Field(default_factory=dict)
    provision_state: str | None = None
    power_state: str | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    model: str | None = None
    devices: list[GpuDevice] = Field(default_factory=list)
    lease_id: str | None = None  # the gpufabric lease that deployed it, if any
    instance_uuid: str | None = None
    conductor_group: str | None = None  # Ironic's grouping of nodes (API 1.46); "" (the default group) is None

    @property
    def gpu_count(self) -> int:
        return len(self.devices)

    @property
    def available(self) -> bool:
        return self.provision_state == "available" and not self.maintenance


class AgentBootstrap(_Model):
    """What a freshly provisioned machine needs to join gpufabric: carried in the config drive / user data."""

    controller_url: str
    bootstrap_token: SecretStr
    ssh_public_keys: list[str] = Field(default_factory=list)
    # The machine's own SSH host key pair, made by gpufabric (drivers.openstack.host_keys): written by cloud-init.
    ssh_host_key: SshHostKey | None = None
    hostname: str | None = None
    extra_meta: dict[str, str] = Field(default_factory=dict)


class IronicDeployRequest(_Model):
    lease_id: str
    node: str  # node UUID or name
    image_source: str
    root_gb: int = Field(default=10, gt=0)
    image_checksum: str | None = None
    bootstrap: AgentBootstrap
    poll: PollPolicy = PollPolicy(interval_s=5.0, timeout_s=3600.0)


class ProvisionedNode(_Model):
    node_id: str
    name: str
    lease_id: str
    provision_state: str
    addresses: list[str] = Field(default_factory=list)
    host_public_key: str | None = None  # the SSH host key gpufabric gave it (extra.gpufabric_ssh_host_key)


class ReleasedNode(_Model):
    node_id: str
    name: str
    provision_state: str
    cleaned: bool


class VgpuFacts(_Model):
    """Catalog facts of a vGPU type (framebuffer, instances per physical GPU)."""

    type_name: str
    product_model: str
    framebuffer_mib: int
    max_instances: int
    # MIG-backed type: the MIG profile of the GPU instance each vGPU sits on (A100-3-20C: 3g.20gb).
    mig_profile: str | None = None
    # The Linux mdev type (``[devices] enabled_mdev_types``) where the catalog knows it for this type.
    mdev_type: str | None = None


class GpuFlavor(_Model):
    """A Nova flavor that asks for GPUs, decoded from its extra specs."""

    flavor_id: str
    name: str
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    is_public: bool = True
    kind: Literal["gpu", "vgpu"]
    count: int  # PCI devices (gpu) or vGPUs (vgpu) per server
    pci_alias: str | None = None
    resources: dict[str, int] = Field(default_factory=dict)  # resources:<RC>=<n>, incl. VGPU and CUSTOM_*
    required_traits: list[str] = Field(default_factory=list)
    forbidden_traits: list[str] = Field(default_factory=list)
    model: str | None = None  # catalog model from traits / resource classes / alias map, when known
    vgpu: VgpuFacts | None = None
    extra_specs: dict[str, str] = Field(default_factory=dict)


class NovaBootRequest(_Model):
    lease_id: str
    flavor_id: str
    image_id: str
    name: str
    bootstrap: AgentBootstrap | None = None
    key_name: str | None = None
    networks: Literal["none", "auto"] | list[dict[str, str]] = "none"
    availability_zone: str | None = None
    # The compute node to boot on (compute API 2.74, admin): the scheduler still checks it, with Placement.
    hypervisor_hostname: str | None = None
    poll: PollPolicy = PollPolicy(interval_s=2.0, timeout_s=900.0)


class ProvisionedServer(_Model):
    server_id: str
    name: str
    lease_id: str
    status: str
    flavor_id: str | None = None
    host: str | None = None
    addresses: list[str] = Field(default_factory=list)
    host_public_key: str | None = None  # the SSH host key gpufabric gave it (metadata.gpufabric_ssh_host_key)


class TaggedResource(_Model):
    """A node or server carrying gpufabric's lease tag, as reconciliation sees it."""

    kind: Literal["ironic_node", "nova_server"]
    id: str
    name: str
    lease_id: str
    state: str  # Ironic provision_state or Nova server status
    maintenance: bool = False
