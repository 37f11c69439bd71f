"""Mutable simulator state (MIG layout, processes, counters, queued events), persisted as JSON."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.nvml.sim.hostspec import HostSpec

log = logging.getLogger(__name__)
STATE_SCHEMA = "gpufabric.nvml-sim-state/v1"


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CiState(_State):
    id: int
    profile_id: int  # CI profile id (== NVML_COMPUTE_INSTANCE_PROFILE_* index)
    start: int
    size: int
    uuid: str


class GiState(_State):
    id: int
    profile_id: int
    start: int
    size: int
    cis: list[CiState] = Field(default_factory=list)


class ProcState(_State):
    pid: int
    used_memory_mib: int
    name: str | None = None
    gi_id: int | None = None
    ci_id: int | None = None


class EventState(_State):
    type: int
    data: int
    gi_id: int | None = None
    ci_id: int | None = None


class GpuState(_State):
    mig_current: int = 0
    mig_pending: int = 0
    gis: list[GiState] = Field(default_factory=list)
    compute_mode: int = 0
    mig_compute_modes: dict[str, int] = Field(default_factory=dict)  # "gi/ci" -> mode
    processes: list[ProcState] = Field(default_factory=list)
    events: list[EventState] = Field(default_factory=list)
    ecc_volatile_corrected: int = 0
    ecc_volatile_uncorrected: int = 0
    ecc_aggregate_corrected: int = 0
    ecc_aggregate_uncorrected: int = 0
    retired_single_bit: int = 0
    retired_double_bit: int = 0
    retired_pending: bool = False
    remapped_correctable: int = 0
    remapped_uncorrectable: int = 0
    remapped_pending: bool = False
    remapped_failure: bool = False
    lost: bool = False

    def gi(self, gi_id: int) -> GiState | None:
        return next((g for g in self.gis if g.id == gi_id), None)


class HostState(_State):
    schema_: str = Field(default=STATE_SCHEMA, alias="schema")
    fingerprint: list[str]
    uuid_serial: int = 0
    gpus: list[GpuState]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def default_state_path(spec_path: Path | None, bundled_name: str | None) -> Path | None:
    """``<spec>.state.json`` next to a spec file; for bundled specs a per-user state directory."""
    if bundled_name is not None:
        base = os.environ.get("GPUFABRIC_SIM_STATE_DIR")
        if base:
            return Path(base) / f"{bundled_name}.state.json"
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(xdg) / "gpufabric" / "sim" / f"{bundled_name}.state.json"
    if spec_path is not None:
        return spec_path.with_name(spec_path.name + ".state.json")
    return None


def load_state(path: Path | None, spec: HostSpec) -> HostState | None:
    """The saved state, or None when absent, unreadable or made for a different spec."""
    if path is None or not path.exists():
        return None
    try:
        state = HostState.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("discarding unreadable simulator state %s: %s", path, exc)
        return None
    if state.fingerprint != spec.fingerprint() or len(state.gpus) != len(state.fingerprint):
        log.warning(
            "discarding simulator state %s: it was made for GPUs %s, the spec now has %s",
            path,
            state.fingerprint,
            spec.fingerprint(),
        )
        return None
    return state


def save_state(path: Path | None, state: HostState) -> None:
    """Write atomically (temp file + os.replace)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(state.model_dump(by_alias=True), indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
