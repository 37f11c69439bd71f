"""Response and request bodies of the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.bounds import Name128, Reason, ShortText, TaskKind
from drivers.contract.protocol import DesiredState, MigDesired, SharingDesired, Task

AdminState = Literal["active", "drained", "quarantined"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendIn(_In):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: str = Field(min_length=1, max_length=32)
    config: dict[str, Any] = Field(default_factory=dict)


class BackendOut(BaseModel):
    name: str
    kind: str
    config: dict[str, Any]
    created_at: datetime


class PoolPolicy(_In):
    mig: MigDesired | None = None
    sharing: SharingDesired | None = None
    on_demand_mig: bool = Field(default=False, description="Placement may create MIG instances on demand")


class PoolIn(_In):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    policy: PoolPolicy = Field(default_factory=PoolPolicy)


class PoolOut(BaseModel):
    name: str
    description: str
    policy: PoolPolicy
    hosts: int
    created_at: datetime


class MigInstanceOut(BaseModel):
    gpu_instance_id: int
    uuid: str | None
    profile: str
    placement_start: int
    placement_size: int
    memory_mib: int
    busy: bool


class DeviceOut(BaseModel):
    uuid: str
    host: str
    index: int
    model: str
    memory_mib: int
    health: str
    admin_state: str
    mig_mode: str
    pci_bus_id: str
    mig_instances: list[MigInstanceOut]
    slices: list[dict[str, Any]]


class AppliedOut(BaseModel):
    revision: str
    ok: bool
    message: str
    at: datetime


class HostOut(BaseModel):
    hostname: str
    backend: str | None
    pool: str | None
    status: str
    admin_state: str
    health: str
    labels: dict[str, Any]
    agent_version: str
    simulated: bool
    registered_at: datetime
    last_seen: datetime | None
    inventory_generation: int
    gpus: int
    models: list[str]


class HostDetail(HostOut):
    devices: list[DeviceOut]
    desired: DesiredState
    applied: AppliedOut | None
    converged: bool
    inventory: dict[str, Any] | None


class HostPoolIn(_In):
    pool: str | None = Field(description="Pool name, or null to take the host out of its pool")


class DesiredIn(_In):
    """Host overrides; a field left out is unchanged, null removes the override (the pool's applies)."""

    mig: MigDesired | None = None
    sharing: SharingDesired | None = None


class AdminStateIn(_In):
    reason: Reason = ""


class TaskIn(_In):
    kind: TaskKind
    params: dict[str, Any] = Field(default_factory=dict)


class TaskOut(Task):
    host: str
    message: str
    output: dict[str, Any]
    updated_at: datetime


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    result: str
    detail: dict[str, Any]
    request_id: str


class TokenIn(_In):
    role: Literal["admin", "tenant", "agent-bootstrap"]
    name: ShortText = ""
    tenant: Name128 | None = None


class TokenOut(BaseModel):
    key_id: str
    name: str
    role: str
    tenant: str | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret; shown once")


class WhoAmI(BaseModel):
    role: str
    name: str
    tenant: str | None
    host: str | None
