"""Request and response bodies of ``/v1/validations``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.eks.mpijob import NCCL_TEST_BINARIES

ValidationStatus = Literal["pending", "running", "passed", "failed", "error"]
Mode = Literal["single-node", "multi-node"]
HostValidation = Literal["unvalidated", "held", "validated", "quarantined"]
_SIZE = r"^\d+[KMGkmg]?$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NcclTestParams(_In):
    """What to run; shared by requests, schedules and the burn-in policy."""

    test: str = Field(default="all_reduce_perf", description="nccl-tests binary name")
    min_bytes: str = Field(default="8", pattern=_SIZE)
    max_bytes: str = Field(default="128M", pattern=_SIZE)
    step_factor: int = Field(default=2, ge=2)
    iters: int = Field(default=20, ge=1)
    warmup_iters: int = Field(default=5, ge=0)
    gpus_per_node: int | None = Field(default=None, ge=1, description="Default: the host's GPU count")
    expected_busbw_gbps: float | None = Field(default=None, gt=0, description="Override the expected busbw")
    pass_ratio: float | None = Field(default=None, gt=0, le=1.5, description="Default 0.8 (or the pool's)")
    timeout_s: float = Field(default=1800, gt=0)
    # Agents: explicit binary directory / mpirun on the launching host (default: the agent's config).
    tests_dir: str | None = None
    mpirun: str | None = None
    mpirun_args: list[str] = Field(default_factory=list)
    # EKS: image and MPIJob sizing overrides.
    image: str | None = None
    namespace: str = "default"
    instance_type: str | None = None
    nodes: int | None = Field(default=None, ge=1)

    @field_validator("test")
    @classmethod
    def _known_test(cls, value: str) -> str:
        if value not in NCCL_TEST_BINARIES:
            raise ValueError(f"unknown nccl-tests binary {value!r}; one of {', '.join(sorted(NCCL_TEST_BINARIES))}")
        return value


class ValidationIn(NcclTestParams):
    hosts: list[str] | None = Field(default=None, description="Hosts under test (agents run the test)")
    nodegroup: str | None = Field(default=None, description="EKS nodegroup under test (with backend)")
    backend: str | None = None
    mode: Mode | None = Field(
        default=None, description="single-node: one run per host; multi-node: one mpirun across the hosts"
    )

    @model_validator(mode="after")
    def _target(self) -> ValidationIn:
        if bool(self.hosts) == bool(self.nodegroup):
            raise ValueError("give either hosts or nodegroup (+ backend)")
        if self.nodegroup and not self.backend:
            raise ValueError("a nodegroup needs its backend")
        if self.hosts is not None and len(set(self.hosts)) != len(self.hosts):
            raise ValueError("hosts must not repeat")
        return self


class RunOut(BaseModel):
    id: int
    hosts: list[str]
    launcher: str
    task_id: str | None
    job: str | None
    status: str
    message: str
    command: list[Any]
    expected: dict[str, Any] | None
    verdict: dict[str, Any] | None
    rows: list[dict[str, Any]]
    avg_busbw_gbps: float | None
    result: dict[str, Any] | None
    log_tail: str | None
    updated_at: datetime


class ValidationOut(BaseModel):
    id: str
    status: ValidationStatus
    runner: str
    mode: Mode
    purpose: str
    request: dict[str, Any]
    hosts: list[str]
    message: str
    verdict: dict[str, Any] | None
    runs: list[RunOut]
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ValidationSummary(BaseModel):
    id: str
    status: ValidationStatus
    runner: str
    mode: Mode
    purpose: str
    test: str
    hosts: list[str]
    passed: bool | None
    created_at: datetime
    finished_at: datetime | None


class HostValidationOut(BaseModel):
    host: str
    state: HostValidation
    placeable: bool
    reason: str
    validation_id: str | None
    evidence: dict[str, Any]
    admin_state: str
    updated_at: datetime | None


class ScheduleIn(_In):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    cron: str = Field(description="Five-field crontab expression, UTC (e.g. '0 3 * * 0')")
    request: ValidationIn
    enabled: bool = True


class ScheduleOut(BaseModel):
    id: int
    name: str
    cron: str
    request: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None
    last_fired_at: datetime | None
    last_validation_id: str | None
    created_at: datetime


class PolicyIn(_In):
    expected_busbw_gbps: float | None = Field(default=None, gt=0)
    pass_ratio: float | None = Field(default=None, gt=0, le=1.5)
    burn_in: bool | None = Field(default=None, description="Hold newly registered hosts until a burn-in passes")
    burn_in_request: NcclTestParams = Field(default_factory=NcclTestParams)
    burn_in_auto_run: bool = Field(default=True, description="Start the burn-in validation automatically")


class PolicyOut(BaseModel):
    scope: str
    expected_busbw_gbps: float | None
    pass_ratio: float | None
    burn_in: bool | None
    burn_in_since: datetime | None
    burn_in_request: dict[str, Any]
    burn_in_auto_run: bool
    updated_at: datetime
