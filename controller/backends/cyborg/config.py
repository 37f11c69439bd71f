"""The stored config of a ``cyborg`` backend (``CyborgBackend.config_model``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_serializer, field_validator

from controller.backends.openstack.config import OpenStackBackendConfig, stored_auth
from drivers.openstack import OpenStackAuth, PollPolicy


class CyborgConfig(OpenStackBackendConfig):
    """Nova compute hosts whose GPUs are Cyborg devices: gpufabric makes the device profiles and the flavors naming
    them (``accel:device_profile``) and boots servers through Nova; Cyborg binds the accelerator requests."""

    image: str = Field(min_length=1, description="Glance image id servers boot from")
    networks: Literal["none", "auto"] | list[str] = Field(
        default="none", description="'none', 'auto', or Neutron network UUIDs to attach"
    )
    tenants: dict[str, OpenStackAuth] = Field(
        default_factory=dict,
        description="gpufabric tenant -> credentials of its OpenStack project (servers are booted there); other "
        "tenants' servers are booted with 'auth'",
    )
    pin_hypervisor: bool = Field(
        default=True,
        description="Boot on the compute node gpufabric chose (hypervisor_hostname, API 2.74). False: Nova's "
        "scheduler picks among the hosts with the device profile's GPUs",
    )
    flavor_vcpus: int = Field(default=4, ge=1, description="vCPUs of the flavors gpufabric makes per GPU count")
    flavor_ram_mb: int = Field(default=16384, ge=64, description="RAM (MiB) of those flavors")
    flavor_disk_gb: int = Field(default=20, ge=0, description="Root disk (GB) of those flavors")
    boot_timeout_s: float = Field(default=900.0, gt=0, description="Deadline of one server boot and ARQ binding")
    delete_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("auth")
    @classmethod
    def _cyborg_and_nova_reachable(cls, auth: OpenStackAuth) -> OpenStackAuth:
        if auth.method in ("none", "admin_token"):
            for service, what in (
                ("accelerator", "the Cyborg API, e.g. http://cyborg:6666/accelerator"),
                ("compute", "the Nova API"),
                ("placement", "Placement"),
            ):
                if service not in auth.endpoints:
                    raise ValueError(f"endpoints.{service} ({what}) is required with method {auth.method}")
        return auth

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
