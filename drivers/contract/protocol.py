"""The agent <-> controller wire protocol (pull): register, report, heartbeat, task results.

Versioned by ``PROTOCOL_VERSION``. The agent sends it on every request; the controller refuses
versions it does not know (HTTP 400, problem type ``unsupported-protocol``). Additive fields with
defaults do not bump the version.

Flow: ``POST /v1/agents/register`` (bootstrap token) -> :class:`RegisterResponse` with a credential
valid for that host only. Then, with that credential, ``PUT /v1/agents/{host}/inventory``
(:class:`InventoryReport`) or ``POST /v1/agents/{host}/heartbeat`` (:class:`Heartbeat`); both answer
with a :class:`ReportReply` carrying the host's desired state and pending tasks. The agent converges
and says what it applied in its next report (``applied``), and posts a :class:`TaskResult` per task.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.contract.inventory import Inventory

PROTOCOL_VERSION = "gpufabric.agent/v1"
SUPPORTED_PROTOCOL_VERSIONS = frozenset({PROTOCOL_VERSION})

TaskStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
ReportOutcome = Literal["stored", "unchanged"]

# Telemetry that changes every sample; it does not change what can be placed, so it is left out of
# the content hash and an inventory differing only there takes the cheap "unchanged" path.
_VOLATILE_GPU_FIELDS = ("temperature_c", "power_draw_w", "utilization_gpu_pct", "memory_used_mib")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Model):
    protocol_version: str = PROTOCOL_VERSION
    hostname: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    agent_version: str
    backend: str | None = Field(default=None, description="Backend name to attach the host to, if known")
    labels: dict[str, str] = Field(default_factory=dict)


class RegisterResponse(_Model):
    protocol_version: str = PROTOCOL_VERSION
    hostname: str
    credential: str = Field(description="Bearer credential for this host only; shown once")
    generation: int = Field(description="Last inventory generation the controller stored (0 if none)")
    report_interval_s: float


class MigDesired(_Model):
    """A mig-parted config document and the name of the config to select from it."""

    config: dict[str, Any] = Field(description="mig-parted document: {version: v1, mig-configs: {...}}")
    selected: str


class SharingDesired(_Model):
    """An NVIDIA device plugin config document (``sharing.timeSlicing`` / ``sharing.mps``)."""

    config: dict[str, Any]


class LeasedSlice(_Model):
    """A slice of this host that a tenant's lease holds (informational; additive in protocol v1)."""

    lease: str
    tenant: str
    device_uuid: str
    kind: str
    units: int = 1
    profile: str | None = None
    mig_uuid: str | None = None
    # MIG: the memory-slice start the controller chose (its claims cover that placement); an instance not yet
    # created (no ``mig_uuid``) is created exactly there (additive in protocol v1: older agents ignore it).
    placement_start: int | None = None


class DesiredState(_Model):
    revision: str = Field(description="Content hash of this desired state; the agent echoes it when applied")
    mig: MigDesired | None = None
    sharing: SharingDesired | None = None
    # Not part of ``revision``: nothing for the agent to apply. MIG instances created on demand for a lease
    # are part of ``mig`` (and so of the revision).
    leases: list[LeasedSlice] = Field(default_factory=list)


class Task(_Model):
    id: str
    kind: str = Field(description="e.g. nccl-test; agents fail tasks of kinds they do not know")
    params: dict[str, Any] = Field(default_factory=dict)
    status: TaskStatus = "pending"
    created_at: datetime


# An agent keeps what it says about an apply to this many characters, without NUL or other control
# characters (besides newline and tab), so a report always fits what the controller stores.
APPLIED_MESSAGE_MAX = 4000
_CONTROL = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None}


def bounded_message(text: str, limit: int = APPLIED_MESSAGE_MAX) -> str:
    """``text`` without control characters, cut to ``limit`` characters (an ellipsis marks the cut)."""
    clean = text.translate(_CONTROL)
    return clean if len(clean) <= limit else clean[: limit - 1] + "\u2026"


class AppliedState(_Model):
    """What the agent did with a desired state revision."""

    revision: str
    ok: bool
    message: str = ""
    at: datetime


class InventoryReport(_Model):
    protocol_version: str = PROTOCOL_VERSION
    generation: int = Field(ge=1, description="Monotonic per host; a lower one than stored is refused")
    inventory: Inventory
    applied: AppliedState | None = None


class Heartbeat(_Model):
    protocol_version: str = PROTOCOL_VERSION
    generation: int = Field(ge=0, description="Generation of the last inventory the agent reported")
    inventory_hash: str | None = Field(
        default=None, description="Content hash of the agent's current inventory; a mismatch asks for a report"
    )
    applied: AppliedState | None = None


class ReportReply(_Model):
    protocol_version: str = PROTOCOL_VERSION
    hostname: str
    outcome: ReportOutcome | None = Field(default=None, description="For inventory reports only")
    generation: int
    inventory_wanted: bool = Field(
        default=False, description="The controller's stored inventory differs; send a full report"
    )
    desired: DesiredState
    tasks: list[Task] = Field(default_factory=list)
    report_interval_s: float


class TaskResult(_Model):
    protocol_version: str = PROTOCOL_VERSION
    status: Literal["running", "succeeded", "failed"]
    message: str = ""
    output: dict[str, Any] = Field(default_factory=dict)


def inventory_content_hash(inventory: Inventory) -> str:
    """sha256 over the canonical JSON of an inventory, without its timestamp and volatile telemetry."""
    data = inventory.model_dump(mode="json", exclude={"collected_at"})
    for gpu in data.get("gpus", []):
        for key in _VOLATILE_GPU_FIELDS:
            gpu.pop(key, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def desired_state_revision(mig: MigDesired | None, sharing: SharingDesired | None) -> str:
    canonical = json.dumps(
        {
            "mig": mig.model_dump(mode="json") if mig else None,
            "sharing": sharing.model_dump(mode="json") if sharing else None,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
