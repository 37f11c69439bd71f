"""What the stored configs of the ``ironic``, ``nova`` and ``cyborg`` backends share: how to reach the cloud and how gpufabric
uses it (``controller.backends.ironic.config``, ``controller.backends.nova.config`` add each kind's fields).

``POST /v1/backends`` validates a config with its kind's model (``config_model`` of the kind's backend); a bad field
is a 422 problem naming it (``ironic config: auth.cloud: ...``).

Authentication is :class:`drivers.openstack.OpenStackAuth` (a ``clouds.yaml`` cloud, Keystone password or
application credential, or ``none`` / ``admin_token`` with explicit endpoints for standalone services). Provisioning
never uses openstacksdk's ``wait=True``: the backend polls with ``poll_interval_s`` and gives up after
``deploy_timeout_s`` (Ironic) / ``boot_timeout_s`` (Nova), counted from the moment the lease started provisioning.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_serializer

from drivers.openstack import OpenStackAuth, PollPolicy

OrphanPolicy = Literal["report", "release"]
_Layer = Annotated[int, Field(ge=1, le=3)]
_SECRETS = ("password", "application_credential_secret", "token")


def stored_auth(auth: OpenStackAuth) -> dict[str, Any]:
    """The auth as the store keeps it: secrets in clear (pydantic masks ``SecretStr`` in a JSON dump)."""
    data = auth.model_dump(mode="json", exclude_none=True)
    for name in _SECRETS:
        value = getattr(auth, name)
        if value is not None:
            data[name] = value.get_secret_value()
    return data


class OpenStackBackendConfig(BaseModel):
    """What every OpenStack backend config has: how to reach the cloud and how gpufabric uses it."""

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
    topology_layers: dict[Annotated[str, Field(min_length=1, max_length=255)], _Layer] = Field(
        default_factory=dict,
        description="Nova aggregate (Ironic: conductor group) name -> the network node layer (1 top .. 3 directly "
        "above the hosts) it stands for; wins over the aggregate's gpufabric:network_node_layer metadata",
    )
    tenant_ssh_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="Tenant -> SSH public keys put on machines provisioned for it"
    )
    ssh_user: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z_][a-z0-9_-]*$",
        description="The login the image's cloud-init gives the tenant's keys (its default user: ubuntu, cloud-user, "
        "...), shown in the lease's access; unset: the access says 'the image's default user'",
    )

    @field_serializer("auth")
    def _dump_auth(self, auth: OpenStackAuth) -> dict[str, Any]:
        return stored_auth(auth)

    @property
    def zone(self) -> str | None:  # the name the placement engine's fallback reads from a backend config
        return self.az


class NovaServersConfig(OpenStackBackendConfig):
    """What the kinds that boot Nova servers share (``nova``, ``cyborg``): the image and networks, the tenants'
    projects, where to boot and how long to wait."""

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
        description="Boot on the compute node gpufabric chose (hypervisor_hostname, API 2.74; needs the "
        "compute:servers:create:requested_destination policy, admin by default). False: Nova's scheduler picks",
    )
    boot_timeout_s: float = Field(default=900.0, gt=0, description="Deadline of one server boot")
    delete_timeout_s: float = Field(default=300.0, gt=0)

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
