"""Host spec: the YAML description of a simulated GPU host (see docs/simulator.md for every key)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drivers.gpus.catalog import Product, load_catalog

_UUID_NS = uuid.UUID("6a1f3c52-9d0e-4b7a-8e21-5c3f0b9d7e64")
# Bus numbers of the eight GPUs of a typical HGX board, then more in steps of 0x10.
_BUSES = [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB]


class HostSpecError(ValueError):
    """A host spec file is invalid; the message names the file and the field."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigInstanceSpec(_Spec):
    profile: str = Field(description="profile name, e.g. 3g.20gb (or 'MIG 3g.20gb')")
    start: int | None = Field(default=None, description="placement start; driver default when absent")


class ProcessSpec(_Spec):
    pid: int = Field(gt=0)
    used_memory_mib: int = Field(ge=0)
    name: str | None = None
    gpu_instance_id: int | None = Field(default=None, description="GI id the process runs in (MIG)")
    compute_instance_id: int | None = None


class EccSpec(_Spec):
    volatile_corrected: int = 0
    volatile_uncorrected: int = 0
    aggregate_corrected: int = 0
    aggregate_uncorrected: int = 0


class RetiredPagesSpec(_Spec):
    single_bit: int = 0
    double_bit: int = 0
    pending: bool = False


class RemappedRowsSpec(_Spec):
    correctable: int = 0
    uncorrectable: int = 0
    pending: bool = False
    failure: bool = False


class NvlinkSpec(_Spec):
    version: int = Field(default=4, ge=1, le=6, description="NVLink generation (4 = Hopper)")
    links_per_gpu: int = Field(default=18, ge=1, le=36)


class PcieSpec(_Spec):
    gpus_per_switch: int = Field(default=2, ge=1)
    gpus_per_numa_node: int = Field(default=4, ge=1)


class GpuGroupSpec(_Spec):
    product: str
    count: int = Field(default=1, ge=1, le=64)
    mig: Literal["enabled", "disabled"] | None = None
    mig_instances: list[MigInstanceSpec] = Field(default_factory=list)
    processes: list[ProcessSpec] = Field(default_factory=list)
    ecc: EccSpec = Field(default_factory=EccSpec)
    retired_pages: RetiredPagesSpec | None = None
    remapped_rows: RemappedRowsSpec | None = None
    xid_events: list[int] = Field(default_factory=list)
    temperature_c: int = 34
    power_draw_w: float = 72.0
    power_limit_w: float = 400.0
    utilization_gpu_pct: int = Field(default=0, ge=0, le=100)
    lost: bool = False

    @field_validator("product")
    @classmethod
    def _known_product(cls, v: str) -> str:
        try:
            load_catalog().product(v)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> GpuGroupSpec:
        prod = load_catalog().product(self.product)
        if self.mig is not None and not prod.mig_capable:
            raise ValueError(f"mig: {prod.name} is not MIG-capable")
        if self.mig_instances and self.mig != "enabled":
            raise ValueError("mig_instances need mig: enabled")
        for inst in self.mig_instances:
            if prod.profile_by_name(inst.profile) is None:
                known = ", ".join(p.name for p in prod.mig_profiles)
                raise ValueError(f"mig_instances: no profile {inst.profile!r} on {prod.name}; known: {known}")
        if self.count > 1 and self.processes:
            raise ValueError("processes: give them in a group with count: 1 (PIDs are host-wide)")
        if self.retired_pages is not None and prod.nvml_architecture >= 7:
            raise ValueError(f"retired_pages: {prod.name} uses row remapping, not page retirement; use remapped_rows")
        if self.remapped_rows is not None and prod.nvml_architecture < 7:
            raise ValueError(f"remapped_rows: {prod.name} predates row remapping; use retired_pages")
        return self


class HostSpec(_Spec):
    hostname: str = "sim-host"
    driver_version: str = "550.90.07"
    cuda_driver_version: int = 12040
    nvml_version: str | None = None
    root: bool = True
    mig_reset_required: bool = True
    vgpu: bool = False
    nvlink: NvlinkSpec | None = None
    pcie: PcieSpec = Field(default_factory=PcieSpec)
    gpus: list[GpuGroupSpec] = Field(min_length=1)

    @property
    def effective_nvml_version(self) -> str:
        return self.nvml_version or f"{self.cuda_driver_version // 1000}.{self.driver_version}"

    def expand(self) -> list[GpuSpec]:
        """One entry per GPU, in NVML index order."""
        out: list[GpuSpec] = []
        for group in self.gpus:
            prod = load_catalog().product(group.product)
            for _ in range(group.count):
                out.append(GpuSpec(index=len(out), product=prod, group=group, host=self))
        return out

    def fingerprint(self) -> list[str]:
        """What must not change for a saved state to stay valid."""
        return [g.product.name for g in self.expand()]


@dataclass(frozen=True)
class GpuSpec:
    index: int
    product: Product
    group: GpuGroupSpec
    host: HostSpec

    @property
    def uuid(self) -> str:
        return "GPU-" + str(uuid.uuid5(_UUID_NS, f"{self.host.hostname}/gpu/{self.index}"))

    @property
    def serial(self) -> str:
        n = uuid.uuid5(_UUID_NS, f"{self.host.hostname}/serial/{self.index}").int % 10**12
        return f"1{n:012d}"

    @property
    def bus(self) -> int:
        if self.index < len(_BUSES):
            return _BUSES[self.index]
        return (0xE0 + (self.index - len(_BUSES)) * 0x10) % 0x100 or 0x01

    @property
    def bus_id(self) -> str:
        return f"{0:08X}:{self.bus:02X}:00.0"

    @property
    def bus_id_legacy(self) -> str:
        return f"{0:04X}:{self.bus:02X}:00.0"


def parse_host_spec(data: object, source: str) -> HostSpec:
    try:
        return HostSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']}")
        raise HostSpecError(f"invalid host spec {source}:\n" + "\n".join(lines)) from None


def load_host_spec(path: Path) -> HostSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise HostSpecError(f"invalid host spec {path}: not YAML: {exc}") from None
    return parse_host_spec(data, str(path))
