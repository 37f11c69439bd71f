"""Nova: GPU flavors (PCI passthrough aliases, vGPU, custom resource classes, traits), boot and delete servers.

Servers gpufabric boots carry the metadata ``gpufabric_lease = <lease id>``. ``provision`` polls with the caller's
``PollPolicy``; a server that goes to ERROR with Nova's "No valid host was found" is deleted and ``NoValidHost`` is
raised, so the caller can move the lease to its next candidate.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers.openstack.configdrive import user_data
from drivers.openstack.connection import service
from drivers.openstack.errors import (
    NoMatchingFlavor,
    NoValidHost,
    OpenStackCallFailed,
    ProvisioningFailed,
    ProvisioningTimeout,
    sdk_call,
)
from drivers.openstack.gpus import model_token, product_for_label, product_for_name, vgpu_type_for
from drivers.openstack.host_keys import HOST_KEY_TAG
from drivers.openstack.models import (
    LEASE_TAG,
    GpuFlavor,
    NovaBootRequest,
    ProvisionedServer,
    TaggedResource,
    VgpuFacts,
)
from drivers.openstack.polling import PollPolicy, PollTimeout, poll

log = logging.getLogger(__name__)

_RESOURCES = re.compile(r"^resources(?P<group>[A-Za-z0-9_-]*):(?P<rc>[A-Z0-9_]+)$")
_TRAIT = re.compile(r"^trait(?P<group>[A-Za-z0-9_-]*):(?P<trait>[A-Z0-9_]+)$")
PCI_ALIAS_KEY = "pci_passthrough:alias"
# Optional operator hints on a flavor, for when traits / resource classes do not name the model.
MODEL_HINT_KEY = "gpufabric:gpu_model"
VGPU_TYPE_HINT_KEY = "gpufabric:vgpu_type"
NO_VALID_HOST = "No valid host"


@dataclass(frozen=True)
class Hypervisor:
    name: str  # hypervisor hostname: the Placement root provider
    up: bool  # state up and service enabled
    service_host: str  # the nova-compute service's host: what aggregates list


@dataclass(frozen=True)
class HostAggregate:
    name: str
    hosts: tuple[str, ...]  # compute service hosts
    availability_zone: str | None
    metadata: dict[str, str] = field(default_factory=dict)


def parse_pci_alias(value: str) -> dict[str, int]:
    """``"a100:2"`` or ``"a100:1,t4:1"`` -> ``{"a100": 2}``; a missing count means 1."""
    out: dict[str, int] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, count = part.partition(":")
        out[name.strip()] = out.get(name.strip(), 0) + (int(count) if count.strip() else 1)
    return out


def is_gpu_resource_class(rc: str) -> bool:
    return rc in ("VGPU", "PGPU") or (rc.startswith("CUSTOM_") and "GPU" in rc)


def flavor_from_specs(
    flavor_id: str,
    name: str,
    extra_specs: Mapping[str, str],
    *,
    vcpus: int = 0,
    ram_mb: int = 0,
    disk_gb: int = 0,
    is_public: bool = True,
    alias_models: Mapping[str, str] | None = None,
) -> GpuFlavor | None:
    """Decode a flavor's extra specs; None when it asks for no GPU.

    ``alias_models`` maps a PCI alias name to a GPU model (``{"a100": "A100-80GB"}``) for aliases whose name alone
    says nothing; otherwise the model comes from ``gpufabric:gpu_model``, a ``CUSTOM_GPU_*`` trait or resource class,
    or the alias name itself when it is a model name.
    """
    specs = {str(k): str(v) for k, v in extra_specs.items()}
    resources: dict[str, int] = {}
    required: list[str] = []
    forbidden: list[str] = []
    for key, value in specs.items():
        if m := _RESOURCES.match(key):
            try:
                resources[m["rc"]] = resources.get(m["rc"], 0) + int(value)
            except ValueError:
                continue
        elif m := _TRAIT.match(key):
            (required if value == "required" else forbidden if value == "forbidden" else []).append(m["trait"])
    aliases = parse_pci_alias(specs[PCI_ALIAS_KEY]) if specs.get(PCI_ALIAS_KEY) else {}
    gpu_rcs = {rc: n for rc, n in resources.items() if is_gpu_resource_class(rc) and n > 0}
    if not aliases and not gpu_rcs:
        return None

    kind: Literal["gpu", "vgpu"]
    alias = None
    if gpu_rcs.get("VGPU"):
        kind, count = "vgpu", gpu_rcs["VGPU"]
    elif aliases:
        alias = next(iter(aliases))
        kind, count = "gpu", sum(aliases.values())
    else:
        kind, count = "gpu", sum(n for rc, n in gpu_rcs.items() if rc != "VGPU")

    product = None
    if specs.get(MODEL_HINT_KEY):
        product = product_for_name(specs[MODEL_HINT_KEY])
    if product is None and alias and alias_models and alias in alias_models:
        product = product_for_name(alias_models[alias])
    if product is None:
        for label in (*required, *gpu_rcs):
            if model_token(label) and (product := product_for_label(label)) is not None:
                break
    if product is None and alias:
        product = product_for_name(alias)

    vgpu = None
    if kind == "vgpu":
        candidates = [specs[VGPU_TYPE_HINT_KEY]] if specs.get(VGPU_TYPE_HINT_KEY) else []
        candidates += [t for t in required if t.startswith("CUSTOM_VGPU_")]
        for candidate in candidates:
            found = vgpu_type_for(candidate, product)
            if found:
                p, vt = found
                product = product or p
                vgpu = VgpuFacts(
                    type_name=vt.name,
                    product_model=p.model,
                    framebuffer_mib=vt.framebuffer_mib,
                    max_instances=vt.max_instances,
                    mig_profile=vt.mig_profile,
                    mdev_type=vt.mdev_type,
                )
                break
    return GpuFlavor(
        flavor_id=flavor_id,
        name=name,
        vcpus=vcpus,
        ram_mb=ram_mb,
        disk_gb=disk_gb,
        is_public=is_public,
        kind=kind,
        count=count,
        pci_alias=alias,
        resources=resources,
        required_traits=sorted(required),
        forbidden_traits=sorted(forbidden),
        model=product.model if product else None,
        vgpu=vgpu,
        extra_specs=specs,
    )


def match_flavor(
    flavors: Iterable[GpuFlavor],
    kind: Literal["gpu", "vgpu"],
    count: int = 1,
    model: str | None = None,
    vgpu_type: str | None = None,
) -> GpuFlavor:
    """The smallest flavor (vcpus, ram, disk) that gives exactly ``count`` GPUs / vGPUs of ``kind`` (and ``model``,
    ``vgpu_type`` when given). Raises ``NoMatchingFlavor`` listing what was considered."""
    wanted = product_for_name(model) if model else None
    pool = list(flavors)
    fits = [
        f
        for f in pool
        if f.kind == kind
        and f.count == count
        and (model is None or (f.model is not None and (f.model == (wanted.model if wanted else model))))
        and (vgpu_type is None or (f.vgpu is not None and f.vgpu.type_name.lower() == vgpu_type.lower()))
    ]
    if not fits:
        seen = ", ".join(f"{f.name}({f.kind}x{f.count} {f.model or '?'})" for f in pool) or "none"
        raise NoMatchingFlavor(
            f"no flavor gives {count} x {kind}{' ' + model if model else ''}"
            f"{' type ' + vgpu_type if vgpu_type else ''}; GPU flavors: {seen}"
        )
    return min(fits, key=lambda f: (f.vcpus, f.ram_mb, f.disk_gb, f.name))


def _addresses(server: Any) -> list[str]:
    out = []
    for entries in (getattr(server, "addresses", None) or {}).values():
        for entry in entries or []:
            if entry.get("addr"):
                out.append(str(entry["addr"]))
    return out


class NovaDriver:
    """Nova operations gpufabric needs, over an ``openstack.connection.Connection`` (scoped to the tenant's project
    for ``provision``/``release``; admin for ``tagged(all_projects=True)``)."""

    def __init__(self, conn: Any, *, alias_models: Mapping[str, str] | None = None) -> None:
        self.conn = conn
        self.compute = service(conn, "compute")
        self.alias_models = dict(alias_models or {})

    @staticmethod
    def _call(operation: str, fn: Any) -> Any:
        return sdk_call(operation, fn)

    def hypervisors(self) -> dict[str, bool]:
        """Hypervisor name -> whether it is up and enabled (admin)."""
        return {h.name: h.up for h in self.hypervisor_facts()}

    def hypervisor_facts(self) -> list[Hypervisor]:
        """Every hypervisor: its name (Placement's root provider), whether it is up and enabled, and the compute
        service host it runs under (the name host aggregates list) (admin)."""
        found = self._call("hypervisors", lambda: list(self.compute.hypervisors(details=True)))
        return [
            Hypervisor(
                name=str(h.name),
                up=str(getattr(h, "state", "up") or "up") == "up"
                and str(getattr(h, "status", "enabled") or "enabled") == "enabled",
                service_host=str((getattr(h, "service_details", None) or {}).get("host") or h.name),
            )
            for h in found
        ]

    def aggregates(self) -> list[HostAggregate]:
        """Every host aggregate with its compute hosts, availability zone and metadata (admin, ``os-aggregates``)."""
        found = self._call("aggregates", lambda: list(self.compute.aggregates()))
        return [
            HostAggregate(
                name=str(a.name),
                hosts=tuple(sorted(str(h) for h in a.hosts or ())),
                availability_zone=str(a.availability_zone) if a.availability_zone else None,
                metadata={str(k): str(v) for k, v in (a.metadata or {}).items()},
            )
            for a in found
        ]

    # ------------------------------------------------------------------------------------------- flavors

    def discover_flavors(self) -> list[GpuFlavor]:
        """Every flavor (public and, for admins, private) that asks for a GPU, decoded."""
        out = []
        for flavor in self._call("flavors", lambda: list(self.compute.flavors(details=True, is_public=None))):
            specs = flavor.extra_specs
            if specs is None:
                specs = self._call(
                    "fetch_flavor_extra_specs", lambda f=flavor: self.compute.fetch_flavor_extra_specs(f)
                ).extra_specs
            decoded = flavor_from_specs(
                flavor.id,
                flavor.name,
                specs or {},
                vcpus=flavor.vcpus or 0,
                ram_mb=flavor.ram or 0,
                disk_gb=flavor.disk or 0,
                is_public=bool(flavor.is_public),
                alias_models=self.alias_models,
            )
            if decoded is not None:
                out.append(decoded)
        return sorted(out, key=lambda f: f.name)

    # ------------------------------------------------------------------------------------------- servers

    def find(self, lease_id: str, name: str) -> Any | None:
        """The server named ``name`` tagged for ``lease_id`` (None if there is none)."""
        for server in self._call(
            "servers", lambda: list(self.compute.servers(details=True, name=f"^{re.escape(name)}$"))
        ):
            if (server.metadata or {}).get(LEASE_TAG) == lease_id:
                return server
        return None

    def _find_existing(self, request: NovaBootRequest) -> Any | None:
        return self.find(request.lease_id, request.name)

    def provision(self, request: NovaBootRequest, wait: bool = True) -> ProvisionedServer:
        """Boot a server with the flavor for the lease and wait (your poll policy) until ACTIVE.

        Idempotent: a server of this lease with the same name is reused (waited for) instead of booting another.
        ERROR with "No valid host" -> the server is deleted and ``NoValidHost`` raised; any other ERROR or the
        deadline -> the server is deleted and ``ProvisioningFailed`` / ``ProvisioningTimeout`` raised.

        ``wait=False`` boots (or finds) the server and returns at once with its current status (``BUILD``); an ERROR
        is handled as above. Call again to follow it; the deadline is then the caller's.
        """
        server: Any = self._find_existing(request)
        if server is None:
            kwargs: dict[str, Any] = {
                "name": request.name,
                "flavor_id": request.flavor_id,
                "image_id": request.image_id,
                "networks": request.networks,
                "metadata": {LEASE_TAG: request.lease_id},
            }
            if request.bootstrap is not None:
                kwargs["user_data"] = base64.b64encode(user_data(request.bootstrap, "nova").encode()).decode()
                if request.bootstrap.ssh_host_key is not None:
                    kwargs["metadata"][HOST_KEY_TAG] = request.bootstrap.ssh_host_key.public
            if request.key_name:
                kwargs["key_name"] = request.key_name
            if request.availability_zone:
                kwargs["availability_zone"] = request.availability_zone
            if request.hypervisor_hostname:
                kwargs["hypervisor_hostname"] = request.hypervisor_hostname
            server = self._call("create_server", lambda: self.compute.create_server(**kwargs))
        server_id = server.id

        def done(s: Any) -> bool:
            status = (s.status or "").upper()
            if status == "ACTIVE":
                return True
            if status == "ERROR":
                fault = (s.fault or {}).get("message") or "server went to ERROR"
                cls = NoValidHost if NO_VALID_HOST.lower() in fault.lower() else ProvisioningFailed
                raise cls(server_id, fault, status)
            return False

        policy = request.poll if wait else PollPolicy(interval_s=request.poll.interval_s, timeout_s=1e-9)
        try:
            server = poll(lambda: self._call("get_server", lambda: self.compute.get_server(server_id)), done, policy)
        except PollTimeout as e:
            if wait:
                status = getattr(e.last, "status", None)
                self._delete_quietly(server_id, request.poll)
                raise ProvisioningTimeout(
                    server_id,
                    f"server did not become ACTIVE within {request.poll.timeout_s:g} s (last {status})",
                    status,
                ) from None
            server = e.last  # still building: return its current status
        except ProvisioningFailed:
            self._delete_quietly(server_id, request.poll)
            raise
        return ProvisionedServer(
            server_id=server.id,
            name=server.name,
            lease_id=request.lease_id,
            status=server.status or "",
            flavor_id=request.flavor_id,
            host=getattr(server, "compute_host", None) or getattr(server, "hypervisor_hostname", None),
            addresses=_addresses(server),
            host_public_key=(getattr(server, "metadata", None) or {}).get(HOST_KEY_TAG),
        )

    def console_url(self, server_id: str) -> str:
        """A noVNC console URL for the server (compute API >= 2.6, ``os-remote-consoles``); Nova's console proxy
        accepts its token for ``[consoleauth] token_ttl`` (10 minutes by default)."""
        console = self._call(
            "create_server_remote_console",
            lambda: self.compute.create_server_remote_console(server_id, protocol="vnc", type="novnc"),
        )
        return str(console.url)

    def _delete_quietly(self, server_id: str, policy: PollPolicy) -> None:
        try:
            self.release(server_id, policy)
        except Exception as e:
            log.warning("could not delete failed server %s: %s", server_id, e)

    def release(self, server_id: str, poll_policy: PollPolicy) -> None:
        """Delete the server and wait until it is gone (an already deleted server is fine)."""
        import openstack.exceptions as osexc

        try:
            self.compute.delete_server(server_id)
        except osexc.NotFoundException:
            return
        except osexc.HttpException as e:
            raise OpenStackCallFailed("delete_server", str(e.details or e), e.status_code) from e

        def gone() -> bool:
            try:
                s = self.compute.get_server(server_id)
            except osexc.NotFoundException:
                return True
            if (s.status or "").upper() == "ERROR" and (s.task_state or "") != "deleting":
                raise ProvisioningFailed(
                    server_id, (s.fault or {}).get("message") or "delete left the server in ERROR", "ERROR"
                )
            return False

        try:
            poll(gone, bool, poll_policy)
        except PollTimeout:
            raise ProvisioningTimeout(
                server_id, f"server still exists {poll_policy.timeout_s:g} s after delete"
            ) from None
        self._wait_allocations_freed(server_id, poll_policy)

    def _wait_allocations_freed(self, server_id: str, poll_policy: PollPolicy) -> None:
        """Nova removes a deleted server from its API before its compute frees the server's PCI devices and
        Placement allocations; until then the GPUs cannot be given to another server (No valid host). A release
        is done when Placement holds nothing for the server. Skipped when this connection has no Placement."""
        import keystoneauth1.exceptions as ksexc
        import openstack.exceptions as osexc

        def freed() -> bool:
            try:
                response = self.conn.placement.get(f"/allocations/{server_id}", microversion="1.28")
            except (osexc.EndpointNotFound, ksexc.EndpointNotFound, ksexc.CatalogException):
                return True
            except ksexc.NotFound:
                return True
            if response.status_code == 404:
                return True
            if response.status_code >= 400:
                raise OpenStackCallFailed("get allocations", response.text[:300], response.status_code)
            return not (response.json() or {}).get("allocations")

        try:
            poll(freed, bool, poll_policy)
        except PollTimeout:
            raise ProvisioningTimeout(
                server_id, f"Placement still holds the server's allocations {poll_policy.timeout_s:g} s after delete"
            ) from None

    def tagged(self, all_projects: bool = True) -> list[TaggedResource]:
        """Every server carrying gpufabric's lease tag (admin: across projects)."""
        servers = self._call("servers", lambda: list(self.compute.servers(details=True, all_projects=all_projects)))
        out = []
        for s in servers:
            lease = (s.metadata or {}).get(LEASE_TAG)
            if lease:
                out.append(
                    TaggedResource(kind="nova_server", id=s.id, name=s.name, lease_id=str(lease), state=s.status or "")
                )
        return out
