"""The request language tenants use to ask for GPU slices (validated with pydantic at the boundary)."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from controller.bounds import NO_NUL, no_nul
from controller.placement.model import SliceKind

Topology = Literal[
    "same-host",
    "same-network-node-layer-3",
    "same-network-node-layer-2",
    "same-network-node-layer-1",
    "same-placement-group",
    "same-aggregate",
    "same-az",
    "same-region",
    "any",
]
Policy = Literal["pack", "spread"]
_SSH_KEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")
# Bounds: names fit the store's columns (GPU models and backends String(128), MIG profiles String(32)); memory
# is finite and at most 16 TiB; counts are strict integers (JSON true is not 1).
MAX_MEMORY_GIB = 16384.0
_Model = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL), AfterValidator(no_nul)]
_Profile = Annotated[str, Field(min_length=1, max_length=32, pattern=NO_NUL), AfterValidator(no_nul)]
_Where = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL), AfterValidator(no_nul)]
_SshKey = Annotated[str, Field(max_length=16384, pattern=NO_NUL), AfterValidator(no_nul)]


def _is_openssh_public_key(key: str) -> bool:
    """``<type> <base64> [comment]`` whose base64 decodes to a key blob naming the same type (RFC 4253 string)."""
    parts = key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(_SSH_KEY_TYPES) or len(key) > 16384:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return False
    size = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    return blob[4 : 4 + size] == parts[0].encode()


class SliceRequest(BaseModel):
    """``count`` slices of one kind, on every node of the request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: SliceKind
    count: StrictInt = Field(1, ge=1, le=1024, description="Slices of this kind per node")
    model: _Model | None = Field(
        None, description='GPU model short name ("H100-80GB") or its family prefix ("H100"), case-insensitive'
    )
    min_memory_gib: float | None = Field(
        None,
        gt=0,
        le=MAX_MEMORY_GIB,
        allow_inf_nan=False,
        description="Memory of each slice: GPU memory, MIG profile memory or vGPU framebuffer",
    )
    profile: _Profile | None = Field(None, description='MIG profile, e.g. "3g.40gb" (kind mig only)')
    vgpu_type: _Model | None = Field(None, description='vGPU type name, e.g. "NVIDIA A16-4Q" (kind vgpu only)')

    @model_validator(mode="after")
    def _check(self) -> SliceRequest:
        if self.profile is not None and self.kind != "mig":
            raise ValueError(f"profile {self.profile!r} is only valid with kind 'mig', not {self.kind!r}")
        if self.vgpu_type is not None and self.kind != "vgpu":
            raise ValueError(f"vgpu_type {self.vgpu_type!r} is only valid with kind 'vgpu', not {self.kind!r}")
        if self.kind == "mig" and self.profile is None and self.min_memory_gib is None:
            raise ValueError("a 'mig' slice needs a profile (e.g. '3g.40gb') or min_memory_gib")
        return self

    @field_validator("profile")
    @classmethod
    def _strip_mig_prefix(cls, v: str | None) -> str | None:
        return None if v is None else v.removeprefix("MIG ").strip()

    @property
    def min_memory_mib(self) -> int:
        return 0 if self.min_memory_gib is None else int(self.min_memory_gib * 1024)

    def describe(self) -> str:
        what: str = self.kind
        if self.profile:
            what += f":{self.profile}"
        if self.vgpu_type:
            what += f":{self.vgpu_type}"
        if self.model:
            what += f" {self.model}"
        if self.min_memory_gib:
            what += f" >= {self.min_memory_gib:g} GiB"
        return f"{self.count} x {what}"


class PlacementRequest(BaseModel):
    """What a tenant asks for. ``slices`` are per node; ``nodes`` distinct hosts each get all of them.

    ``topology`` constrains how the nodes relate (all-or-nothing): ``same-host`` (one node),
    ``same-network-node-layer-N`` (every node under one network node at layer N of the instance topology: 3 is
    the node directly above the instances, 1 the top), ``same-placement-group`` (rack / EC2 cluster placement
    group), ``same-aggregate`` (an OpenStack host aggregate / Ironic conductor group), ``same-az``, ``same-region`` or ``any``.
    ``backends`` and ``regions``/``azs`` both restrict and, in list order, express preference.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    slices: list[SliceRequest] = Field(min_length=1, max_length=16)
    nodes: StrictInt = Field(1, ge=1, le=1024)
    topology: Topology = "any"
    backends: list[_Where] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Backend ids or kinds (static, ironic, nova, eks), most preferred first",
    )
    regions: list[_Where] | None = Field(None, min_length=1, max_length=64)
    azs: list[_Where] | None = Field(None, min_length=1, max_length=64)
    require_validated: StrictBool = Field(False, description="Only hosts whose last NCCL validation passed")
    policy: Policy | None = Field(None, description="pack (default) or spread; overrides the engine default")
    duration: timedelta | None = Field(
        None,
        description="Lease duration (ISO 8601 or seconds); the lease is released when it is over. At most the "
        "controller's max_lease_duration_s (default 90 days)",
    )
    ssh_public_keys: list[_SshKey] | None = Field(
        None,
        max_length=16,
        description="OpenSSH public keys for machines the lease provisions (Ironic nodes, Nova servers); "
        "not used for placement",
    )

    @field_validator("ssh_public_keys")
    @classmethod
    def _check_keys(cls, keys: list[str] | None) -> list[str] | None:
        if keys is None:
            return None
        out = []
        for i, key in enumerate(keys):
            if not _is_openssh_public_key(key):
                raise ValueError(f"ssh_public_keys[{i}] is not an OpenSSH public key ('<type> <base64> [comment]')")
            out.append(key.strip())
        return out

    @model_validator(mode="after")
    def _check(self) -> PlacementRequest:
        if self.topology == "same-host" and self.nodes != 1:
            raise ValueError(f"topology 'same-host' means one node; got nodes={self.nodes}")
        if self.duration is not None and self.duration.total_seconds() <= 0:
            raise ValueError("duration must be positive")
        return self

    def describe(self) -> str:
        per_node = " + ".join(s.describe() for s in self.slices)
        if self.nodes == 1:
            return per_node
        return f"{self.nodes} nodes x ({per_node}), {self.topology}"


def parse_request(data: PlacementRequest | dict[str, Any]) -> PlacementRequest:
    """Validate a request body; raises ``pydantic.ValidationError`` with one message per problem."""
    if isinstance(data, PlacementRequest):
        return data
    return PlacementRequest.model_validate(data)
