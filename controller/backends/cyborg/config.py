"""The stored config of a ``cyborg`` backend (``CyborgBackend.config_model``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from controller.backends.openstack.config import NovaServersConfig
from drivers.openstack import OpenStackAuth


class CyborgConfig(NovaServersConfig):
    """Nova compute hosts whose GPUs are Cyborg devices: gpufabric makes the device profiles and the flavors naming
    them (``accel:device_profile``) and boots servers through Nova; Cyborg binds the accelerator requests."""

    pin_hypervisor: bool = Field(
        default=True,
        description="Boot on the compute node gpufabric chose (hypervisor_hostname, API 2.74). False: Nova's "
        "scheduler picks among the hosts with the device profile's GPUs",
    )
    flavor_vcpus: int = Field(default=4, ge=1, description="vCPUs of the flavors gpufabric makes per GPU count")
    flavor_ram_mb: int = Field(default=16384, ge=64, description="RAM (MiB) of those flavors")
    flavor_disk_gb: int = Field(default=20, ge=0, description="Root disk (GB) of those flavors")
    boot_timeout_s: float = Field(default=900.0, gt=0, description="Deadline of one server boot and ARQ binding")

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
