"""The stored config of a ``nova`` backend (``NovaBackend.config_model``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_serializer, field_validator

from controller.backends.openstack.config import OpenStackBackendConfig, stored_auth
from drivers.openstack import OpenStackAuth, PollPolicy, product_for_name


class NovaConfig(OpenStackBackendConfig):
    """Nova compute hosts that pass whole GPUs through (PCI alias flavors) or split them into vGPUs."""

    image: str = Field(min_length=1, description="Glance image id servers boot from")
    networks: Literal["none", "auto"] | list[str] = Field(
        default="none", description="'none', 'auto', or Neutron network UUIDs to attach"
    )
    pci_alias_models: dict[str, str] = Field(
        default_factory=dict,
        description="PCI alias name -> GPU model (catalog name), for aliases whose name says nothing (a100 -> "
        "'A100 80GB PCIe')",
    )
    pci_alias_resource_classes: dict[str, str] = Field(
        default_factory=dict,
        description="PCI alias -> Placement resource class ([pci] alias resource_class), for capacity checks",
    )
    vgpu_types: dict[str, str] = Field(
        default_factory=dict,
        description="GPU model -> vGPU type the pGPUs of that model are configured with ([devices] "
        "enabled_mdev_types), e.g. {'A40': 'A40-8C'}; default: the catalog type with as many instances as "
        "Placement's VGPU total",
    )
    tenants: dict[str, OpenStackAuth] = Field(
        default_factory=dict,
        description="gpufabric tenant -> credentials of its OpenStack project (servers are booted there); other "
        "tenants' servers are booted with 'auth'",
    )
    pin_hypervisor: bool = Field(
        default=True,
        description="Boot on the compute node gpufabric chose (hypervisor_hostname, API 2.74; needs the "
        "compute:servers:create:requested_destination policy, admin by default). False: Nova's scheduler picks",
    )
    boot_timeout_s: float = Field(default=900.0, gt=0, description="Deadline of one server boot")
    delete_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("pci_alias_models")
    @classmethod
    def _known_alias_models(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, model in value.items():
            if product_for_name(model) is None:
                raise ValueError(f"{alias}: {model!r} is not a GPU model the catalog knows")
        return value

    @field_validator("vgpu_types")
    @classmethod
    def _known_vgpu_models(cls, value: dict[str, str]) -> dict[str, str]:
        for model in value:
            if product_for_name(model) is None:
                raise ValueError(f"{model!r} is not a GPU model the catalog knows")
        return value

    @field_serializer("tenants")
    def _dump_tenants(self, tenants: dict[str, OpenStackAuth]) -> dict[str, Any]:
        return {tenant: stored_auth(auth) for tenant, auth in tenants.items()}

    @property
    def boot_poll(self) -> PollPolicy:
        return PollPolicy(interval_s=self.poll_interval_s, timeout_s=self.boot_timeout_s)

    @property
    def delete_poll(self) -> PollPolicy:
        return PollPolicy(interval_s=self.poll_interval_s, timeout_s=self.delete_timeout_s)

    def auth_for(self, tenant: str) -> OpenStackAuth:
        return self.tenants.get(tenant, self.auth)
