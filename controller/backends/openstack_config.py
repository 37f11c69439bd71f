"""The stored config of the ``ironic`` and ``nova`` backends: how to reach the cloud and how gpufabric uses it.

``POST /v1/backends`` validates it with :class:`IronicConfig` / :class:`NovaConfig` (see
``controller.backends.registry``); a bad field is a 422 problem naming it (``ironic config: auth.cloud: ...``).

Authentication is :class:`drivers.openstack.OpenStackAuth` (a ``clouds.yaml`` cloud, Keystone password or
application credential, or ``none`` / ``admin_token`` with explicit endpoints for standalone services). Provisioning
never uses openstacksdk's ``wait=True``: the backend polls with ``poll_interval_s`` and gives up after
``deploy_timeout_s`` (Ironic) / ``boot_timeout_s`` (Nova), counted from the moment the lease started provisioning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_serializer, field_validator

from drivers.openstack import OpenStackAuth, PollPolicy, product_for_name

OrphanPolicy = Literal["report", "release"]
_SECRETS = ("password", "application_credential_secret", "token")


def stored_auth(auth: OpenStackAuth) -> dict[str, Any]:
    """The auth as the store keeps it: secrets in clear (pydantic masks ``SecretStr`` in a JSON dump)."""
    data = auth.model_dump(mode="json", exclude_none=True)
    for name in _SECRETS:
        value = getattr(auth, name)
        if value is not None:
            data[name] = value.get_secret_value()
    return data


class _OpenStackBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auth: OpenStackAuth
    region: str | None = Field(default=None, description="Region label of the backend's hosts (placement filter)")
    az: str | None = Field(default=None, description="Availability zone label of the backend's hosts")
    controller_url: HttpUrl = Field(
        description="The gpufabric controller URL the provisioned machine's agent registers with (config drive / "
        "user data)"
    )
    poll_interval_s: float = Field(default=5.0, gt=0, description="Seconds between state polls")
    inline_wait_s: float = Field(
        default=20.0,
        ge=0,
        description="How long POST /v1/leases waits for the deploy / boot before answering 'provisioning'; the "
        "reconcile job finishes it",
    )
    orphans: OrphanPolicy = Field(
        default="report",
        description="Nodes/servers tagged for a lease that is not live: only report them, or also release them",
    )
    reconcile_interval_s: float = Field(default=60.0, ge=5, description="Period of the sync + reconcile job")
    cost: float = Field(default=1.0, gt=0, description="Placement cost of this backend's hosts (lower is preferred)")
    tenant_ssh_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="Tenant -> SSH public keys put on machines provisioned for it"
    )

    @field_serializer("auth")
    def _dump_auth(self, auth: OpenStackAuth) -> dict[str, Any]:
        return stored_auth(auth)

    @property
    def zone(self) -> str | None:  # the name the placement engine's fallback reads from a backend config
        return self.az


class IronicConfig(_OpenStackBackendConfig):
    """Ironic bare-metal GPU nodes, leased whole (every GPU of the node goes to one lease)."""

    image_source: str = Field(min_length=1, description="Glance image UUID or an http(s) URL of the image")
    image_checksum: str | None = Field(default=None, description="Checksum of an http(s) image (md5/sha256)")
    root_gb: int = Field(default=10, gt=0)
    resource_class_prefix: str = Field(
        default="baremetal-gpu", min_length=1, description="Nodes whose resource class starts with it are GPU nodes"
    )
    cleaning: Literal["expected", "skipped"] = Field(
        default="expected",
        description="'expected': Ironic runs automated cleaning on undeploy (the release waits through it); "
        "'skipped': the deployment has automated_clean disabled",
    )
    deploy_timeout_s: float = Field(default=3600.0, gt=0, description="Deadline of one deploy")
    release_timeout_s: float = Field(default=3600.0, gt=0, description="Deadline of an undeploy (with cleaning)")

    @property
    def deploy_poll(self) -> PollPolicy:
        return PollPolicy(interval_s=self.poll_interval_s, timeout_s=self.deploy_timeout_s)

    @property
    def release_poll(self) -> PollPolicy:
        return PollPolicy(interval_s=self.poll_interval_s, timeout_s=self.release_timeout_s)


class NovaConfig(_OpenStackBackendConfig):
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
