"""The one contract every backend kind implements, and the values that cross it.

A backend kind (``static``, ``ironic``, ``nova``, ``eks``) is one object made at application start
(``controller.backends.registry.build_backends``) and owned by the app's :class:`BackendRegistry`; whatever it keeps
between calls (cloud connections, node watches) lives on that object, never in a module. It declares what it is
(``kind``, ``description``, ``config_model``), what it can hand out (:class:`Capabilities`, each with a human reason),
and implements the operations of a backend's life:

- ``provision`` / ``release`` of a lease, called by the lease service after the store claimed the allocations and
  before it gives them back. ``provision`` may be called again for a lease still ``provisioning`` (an agent reported,
  a node registered, a restart): it must be idempotent. It answers ``ready`` with what the tenant needs, ``pending``
  while something outside still has to act, or raises :class:`ProvisionFailed` (the lease fails, its claims are
  released) or :class:`TryElsewhere` (the claims are released and the lease placed again without those hosts).
- ``sync`` (discovery into the store), ``reconcile`` (drift and orphans), ``checks`` (the backend's own health), its
  periodic jobs and metrics, and the NCCL validation runner.

An operation a kind does not offer raises :class:`NotSupported` naming the kind and the reason it declared in
``Capabilities.unsupported``; the API answers it with a 422 ``not-supported`` problem. :class:`BackendBase` gives those
answers for every operation a kind does not implement.

What a backend needs of the lease tables comes in :class:`LeaseInfo` (read by ``controller.leases.backend_call``):
backends never query leases, their transitions or claims while they provision or release. What sync, reconcile and
checks need of them they ask the app's :class:`LeaseDirectory` (``controller.store.lease_directory``, handed to each
kind by ``build_backends``): plain values come back, never ORM rows, and no backend imports the lease models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from controller.placement import Allocation

# The facts a LeaseDirectory answers with are made by the store; backends import them from here.
from controller.store.lease_facts import ClaimMove as ClaimMove
from controller.store.lease_facts import LeaseStatus as LeaseStatus
from controller.store.lease_facts import LiveClaim as LiveClaim
from controller.store.lease_facts import PlacedLease as PlacedLease
from controller.store.lease_facts import ProvisioningClaim as ProvisioningClaim

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from sqlalchemy.orm import Session

    from controller.jobs.hooks import HookRegistry


class ProvisionFailed(Exception):
    """The backend could not provide the claimed allocations (the lease fails with this message)."""


class TryElsewhere(ProvisionFailed):
    """These hosts cannot take the lease now (capacity gone, no valid host): place it again without them.

    ``hosts`` names the placement hosts to exclude (default: every host the lease was given).
    """

    def __init__(self, message: str, hosts: list[str] | None = None) -> None:
        super().__init__(message)
        self.hosts = hosts


Operation = Literal["sync", "reconcile", "checks", "nccl"]
OPERATIONS: tuple[Operation, ...] = ("sync", "reconcile", "checks", "nccl")


class NotSupported(Exception):
    """An operation this backend kind does not offer, with the reason the kind declared."""

    def __init__(self, kind: str, operation: str, reason: str) -> None:
        super().__init__(f"{operation} is not supported by {kind} backends: {reason}")
        self.kind = kind
        self.operation = operation
        self.reason = reason


@dataclass(frozen=True)
class LeaseInfo:
    """What a backend gets to know about a lease: no ORM objects cross this boundary, and a backend never reads
    the lease tables (leases, their transitions, slice claims) itself: what it needs of them is here."""

    id: str
    tenant: str
    request: dict[str, Any]
    # Host names by the placement engine's host id (the controller uses the hostname as that id).
    hosts: list[str]
    backend_names: dict[str, str] = field(default_factory=dict)  # host -> backend name
    # Given to ``provision``: when the lease last entered ``provisioning`` (deploy and boot deadlines count from it).
    provisioning_since: datetime | None = None
    # Given to ``release``: hosts of this lease's backends where other leases hold live claims (not idle).
    hosts_in_use: frozenset[str] = frozenset()

    def seconds_provisioning(self, now: datetime | None = None) -> float:
        """How long the lease has been provisioning (0 when not known)."""
        if self.provisioning_since is None:
            return 0.0
        return ((now or datetime.now(UTC)) - self.provisioning_since).total_seconds()


@dataclass(frozen=True)
class ProvisionResult:
    state: Literal["ready", "pending"]
    result: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Outcome:
    """What ``sync`` and ``reconcile`` did: the report the API answers with, whether it went without errors, and
    what the audit entry records of it."""

    report: dict[str, Any]
    ok: bool
    audit: dict[str, Any] = field(default_factory=dict)


class LeaseHooks(Protocol):
    """What sync and reconcile need of the lease service (``controller.leases.service.LeaseService``)."""

    def hosts_changed(self, hostnames: Iterable[str]) -> None: ...

    def reprovision(self, lease_id: str) -> None: ...


class LeaseDirectory(Protocol):
    """What backends may know of the lease tables outside provision / release, one question a method (the store
    answers, ``controller.store.lease_directory``). Each read runs in its own short transaction."""

    def live_claim_hosts(self, backend_id: int) -> frozenset[int]:
        """Ids of the backend's hosts where live claims are held (a sync keeps those hosts)."""
        ...

    def live_claims(self, host_ids: Iterable[int]) -> list[LiveClaim]:
        """Every live claim on these hosts, by host id then claim (reconcile compares them with what the cloud
        counts)."""
        ...

    def lease_status(self, lease_ids: Iterable[str]) -> dict[str, LeaseStatus]:
        """The leases among ``lease_ids`` the store knows, by id (orphan detection: a cloud resource tagged for a
        lease that is not live)."""
        ...

    def provisioning_claims(self, backend_id: int, kind: str | None = None) -> list[ProvisioningClaim]:
        """Leases still ``provisioning`` (of backend kind ``kind`` when given) with live claims on the backend's
        hosts, one entry per (lease, host), by lease id then host id."""
        ...

    def provisioning_leases(self, kind: str) -> list[str]:
        """Ids of every lease of backend kind ``kind`` still ``provisioning``, sorted."""
        ...

    def placed_leases(self, kind: str) -> list[PlacedLease]:
        """Leases of backend kind ``kind`` that hold their hosts now (``provisioning`` or ``ready``), by id."""
        ...

    def move_claims(self, session: Session, move: ClaimMove) -> None:
        """The one write: move a lease's live claims and allocations from one host to another inside the caller's
        transaction (``session``, committed by the caller with its own changes to those hosts). A unit already
        claimed on the target raises ``sqlalchemy.exc.IntegrityError`` at flush."""
        ...


@dataclass(frozen=True)
class ClusterRun:
    """The shape of an NCCL job on one of a backend's node groups (``POST /v1/validations`` with ``nodegroup``), as
    the backend kind reads it from its config and hosts: ``hosts`` are the group's nodes gpufabric knows."""

    instance_type: str
    nodes: int
    gpus_per_node: int | None
    gpu_model: str | None
    hosts: tuple[str, ...]


class ClusterRequestError(ValueError):
    """A cluster NCCL job that cannot be shaped as asked (``status`` for the API: 404 for a missing backend)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


SLICE_KINDS = frozenset({"gpu", "mig", "timeslice", "mps", "vgpu"})


@dataclass(frozen=True)
class Capabilities:
    """What a backend kind can hand out, each with the reason, declared so placement refuses what it cannot do
    before any claim (``controller.placement.filters``: the ``capability`` filter) instead of failing late."""

    # What a lease on this kind gets (shown with the kind).
    access: str
    slice_kinds: frozenset[str] = SLICE_KINDS
    # Why the kinds it does not offer are missing (shown in refusals).
    why_not: str = ""
    # Hosts are leased whole: a lease takes every GPU of each of its hosts (Ironic bare metal).
    whole_node: bool = False
    whole_node_reason: str = ""
    # One kind of slice per host and lease (a Nova server gets one flavor: whole GPUs or vGPUs).
    one_kind_per_host: bool = False
    one_kind_reason: str = ""
    # Provisioning may wait on what the hosts' agents report (a MIG instance, a device access grant): every inventory
    # a host's agent reports provisions the kind's ``provisioning`` leases on that host again.
    waits_on_agents: bool = False
    # How NCCL validation runs on this kind's hosts.
    validation: str = ""
    # Operations the kind does not offer (OPERATIONS), each with why.
    unsupported: Mapping[str, str] = field(default_factory=dict)

    def reasons(self) -> dict[str, str]:
        """Every declared capability with its reason (an empty reason means the kind left it unexplained)."""
        out = {"access": self.access, "validation": self.validation}
        if self.slice_kinds != SLICE_KINDS:
            out["slice_kinds"] = self.why_not
        if self.whole_node:
            out["whole_node"] = self.whole_node_reason
        if self.one_kind_per_host:
            out["one_kind_per_host"] = self.one_kind_reason
        out.update({f"no {op}": why for op, why in self.unsupported.items()})
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "access": self.access,
            "slice_kinds": sorted(self.slice_kinds),
            "why_not": self.why_not,
            "whole_node": self.whole_node,
            "whole_node_reason": self.whole_node_reason,
            "one_kind_per_host": self.one_kind_per_host,
            "one_kind_reason": self.one_kind_reason,
            "validation": self.validation,
            "waits_on_agents": self.waits_on_agents,
            "operations": {op: op not in self.unsupported for op in OPERATIONS},
            "unsupported": dict(self.unsupported),
        }


class Backend(Protocol):
    """One backend kind: what it is, what it can hand out, and the operations of its life."""

    @property
    def kind(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def config_model(self) -> type[BaseModel]: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult: ...

    def release(self, lease: LeaseInfo) -> None: ...

    def sync(self, name: str, leases: LeaseHooks | None) -> Outcome:
        """Discovery: the backend's hosts and devices into the store (then ``leases.hosts_changed``)."""
        ...

    def reconcile(self, name: str, leases: LeaseHooks | None) -> Outcome:
        """Sync, then drift and orphans: finish interrupted leases, report (or release) what no lease holds."""
        ...

    def last_reconcile(self, name: str) -> dict[str, Any] | None: ...

    def checks(self, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The backend's own health findings."""
        ...

    def nccl_cluster(self, name: str, nodegroup: str, instance_type: str | None, nodes: int | None) -> ClusterRun:
        """The shape of an NCCL job on the node group ``nodegroup`` of backend ``name`` (:class:`ClusterRun`); the
        request's ``instance_type`` and ``nodes`` win over the group's config. :class:`ClusterRequestError` if it
        cannot be shaped."""
        ...

    def nccl_runner(self, name: str) -> Any:
        """The runner of NCCL validation jobs (MPIJobs) on backend ``name``'s cluster, through the access its config
        gives (API URL and token, kubeconfig or in-cluster)."""
        ...

    def install_jobs(self, hooks: HookRegistry, leases: LeaseHooks) -> None:
        """Register the kind's periodic jobs (sync, reconcile) on the app's hook registry."""
        ...

    def metrics(self) -> list[Metric]:
        """Metric families read at scrape time (merged across kinds by name)."""
        ...


class BackendBase:
    """Answers for what a kind does not do: each operation it declared unsupported raises :class:`NotSupported`;
    no periodic jobs, no metrics. A kind overrides what it offers."""

    kind: ClassVar[str]
    description: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[Capabilities]

    def _unsupported(self, operation: Operation) -> NotSupported:
        return NotSupported(self.kind, operation, self.capabilities.unsupported.get(operation, "not implemented"))

    def sync(self, name: str, leases: LeaseHooks | None) -> Outcome:
        raise self._unsupported("sync")

    def reconcile(self, name: str, leases: LeaseHooks | None) -> Outcome:
        raise self._unsupported("reconcile")

    def last_reconcile(self, name: str) -> dict[str, Any] | None:
        raise self._unsupported("reconcile")

    def checks(self, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        raise self._unsupported("checks")

    def nccl_cluster(self, name: str, nodegroup: str, instance_type: str | None, nodes: int | None) -> ClusterRun:
        raise self._unsupported("nccl")

    def nccl_runner(self, name: str) -> Any:
        raise self._unsupported("nccl")

    def install_jobs(self, hooks: HookRegistry, leases: LeaseHooks) -> None:
        return None

    def metrics(self) -> list[Metric]:
        return []
