"""Converge a host on a device-plugin sharing config: compute modes through NVML, and outside
Kubernetes the config file and the MPS control daemon.

NVML must be initialised by the caller (``drivers.nvml.session.open_nvml``). Every step is
idempotent: a second apply of the same config changes nothing and reports ``unchanged``.
What the agent itself switched to EXCLUSIVE_PROCESS is remembered in a small state file so that
leaving MPS puts exactly those devices back to DEFAULT and nothing an admin set by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.sharing.config import GPU_RESOURCE, DevicePluginConfig, SharingStrategy
from agent.sharing.errors import SharingApplyError
from agent.sharing.offers import mps_client_memory_mib

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

COMPUTE_MODE_NAMES = {
    0: "default",
    1: "exclusive-thread",
    2: "prohibited",
    3: "exclusive-process",
}
DEFAULT_STATE_DIR = Path("/var/lib/gpufabric")
STATE_FILE = "sharing-state.json"


class MpsSettings(BaseModel):
    """How the MPS control daemon is run outside Kubernetes (inside it the device plugin runs it)."""

    start_command: list[str] = Field(default_factory=lambda: ["nvidia-cuda-mps-control", "-d"])
    stop_command: list[str] = Field(default_factory=lambda: ["nvidia-cuda-mps-control"])
    stop_input: str = "quit\n"
    pipe_directory: Path = Path("/tmp/nvidia-mps")
    log_directory: Path = Path("/var/log/nvidia-mps")
    memory_limit_mib: int | None = Field(
        default=None, description="Pinned device memory per client; default GPU memory / replicas"
    )
    active_thread_percentage: int | None = Field(
        default=None, ge=1, le=100, description="SM share per client; default 100 / replicas"
    )
    timeout_s: float = 60.0


class ComputeModeChange(BaseModel):
    gpu_index: int
    uuid: str = Field(description="GPU or MIG device UUID whose compute mode was set")
    before: str
    after: str


class ApplyReport(BaseModel):
    config_name: str
    strategy: SharingStrategy
    kubernetes: bool
    compute_mode_changes: list[ComputeModeChange] = Field(default_factory=list)
    config_written: str | None = None
    mps_daemon: Literal["started", "restarted", "stopped", "running", "not-running", "skipped"] = "skipped"
    mps_environment: dict[str, str] = Field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.compute_mode_changes) or self.mps_daemon in ("started", "restarted", "stopped")


class _Device(BaseModel):
    index: int
    uuid: str
    memory_mib: int
    mig_enabled: bool
    handle: Any = None
    mig_devices: list[tuple[str, Any]] = Field(default_factory=list)
    mig_memory_mib: dict[str, int] = Field(default_factory=dict)


# --- NVML ---------------------------------------------------------------------------------------


def _mig_enabled(handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return False
    return bool(current)


def _mig_devices(handle: Any) -> list[tuple[str, Any]]:
    found = []
    for i in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except (pynvml.NVMLError_NotFound, pynvml.NVMLError_InvalidArgument):
            continue
        found.append((pynvml.nvmlDeviceGetUUID(mig), mig))
    return found


def _devices() -> list[_Device]:
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        mig = _mig_enabled(handle)
        mig_devices = _mig_devices(handle) if mig else []
        devices.append(
            _Device(
                index=index,
                uuid=pynvml.nvmlDeviceGetUUID(handle),
                memory_mib=pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                mig_enabled=mig,
                handle=handle,
                mig_devices=mig_devices,
                mig_memory_mib={u: pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20 for u, h in mig_devices},
            )
        )
    return devices


def _set_compute_mode(device: _Device, uuid: str, handle: Any, mode: int) -> ComputeModeChange | None:
    before = pynvml.nvmlDeviceGetComputeMode(handle)
    if before == mode:
        return None
    try:
        pynvml.nvmlDeviceSetComputeMode(handle, mode)
    except pynvml.NVMLError_NoPermission:
        raise SharingApplyError(
            f"GPU {device.index} ({uuid}): setting compute mode to {COMPUTE_MODE_NAMES[mode]} needs root "
            "(NVML returned NO_PERMISSION); run the agent as root or set it with "
            f"`nvidia-smi -i {device.index} -c {COMPUTE_MODE_NAMES[mode].upper().replace('-', '_')}`"
        ) from None
    except pynvml.NVMLError as exc:
        raise SharingApplyError(
            f"GPU {device.index} ({uuid}): setting compute mode to {COMPUTE_MODE_NAMES[mode]} failed: {exc}"
        ) from None
    return ComputeModeChange(
        gpu_index=device.index,
        uuid=uuid,
        before=COMPUTE_MODE_NAMES.get(before, str(before)),
        after=COMPUTE_MODE_NAMES[mode],
    )


def _targets(device: _Device) -> list[tuple[str, Any]]:
    """Compute mode lives on the MIG device handles when MIG is on, else on the GPU handle."""
    return device.mig_devices if device.mig_enabled else [(device.uuid, device.handle)]


# --- state --------------------------------------------------------------------------------------


def _load_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SharingApplyError(f"sharing state {path} is unreadable: {exc}") from None
    return data if isinstance(data, dict) else {}


def _save_state(state_dir: Path, state: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_state(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """What the last apply left behind: config name, strategy, devices set exclusive, MPS daemon."""
    return _load_state(state_dir)


# --- MPS daemon ----------------------------------------------------------------------------------


def mps_environment(
    config: DevicePluginConfig, devices: list[_Device] | list[dict[str, Any]], settings: MpsSettings
) -> dict[str, str]:
    """The environment for the MPS control daemon: directories and per-client limits per GPU."""
    mps = config.sharing.mps if config.sharing else None
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": str(settings.pipe_directory),
        "CUDA_MPS_LOG_DIRECTORY": str(settings.log_directory),
    }
    if mps is None:
        return env
    limits: list[str] = []
    uuids: list[str] = []
    replicas_seen: list[int] = []
    for raw in devices:
        device = raw if isinstance(raw, _Device) else _Device.model_validate(raw)
        resource = next(
            (r for r in mps.resources if r.name == GPU_RESOURCE and r.matches(index=device.index, uuid=device.uuid)),
            None,
        )
        if resource is None:
            continue
        replicas_seen.append(resource.replicas)
        for uuid, _handle in _targets(device):
            memory = device.mig_memory_mib.get(uuid, device.memory_mib)
            limit = mps_client_memory_mib(memory, resource.replicas, settings.memory_limit_mib)
            # ordinals count within CUDA_VISIBLE_DEVICES, which the daemon is started with
            limits.append(f"{len(uuids)}={limit}M")
            uuids.append(uuid)
    if limits:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = ",".join(limits)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
        percentage = settings.active_thread_percentage or max(1, 100 // max(replicas_seen))
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(percentage)
    return env


def _run(command: list[str], env: dict[str, str], stdin: str | None, timeout: float, what: str) -> None:
    try:
        result = subprocess.run(
            command,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise SharingApplyError(f"{what}: command not found: {command[0]!r}") from None
    except subprocess.TimeoutExpired:
        raise SharingApplyError(f"{what}: {' '.join(command)} did not finish within {timeout:g}s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise SharingApplyError(
            f"{what}: {' '.join(command)} exited with {result.returncode}" + (f": {detail[-1]}" if detail else "")
        )


def start_mps_daemon(settings: MpsSettings, env: dict[str, str]) -> None:
    settings.pipe_directory.mkdir(parents=True, exist_ok=True)
    settings.log_directory.mkdir(parents=True, exist_ok=True)
    _run(settings.start_command, env, None, settings.timeout_s, "starting the MPS control daemon")


def stop_mps_daemon(settings: MpsSettings, env: dict[str, str]) -> None:
    _run(settings.stop_command, env, settings.stop_input, settings.timeout_s, "stopping the MPS control daemon")


# --- apply --------------------------------------------------------------------------------------


def _write_config(path: Path, config: DevicePluginConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config.to_yaml())
    os.replace(tmp, path)


def apply_sharing(
    config: DevicePluginConfig,
    *,
    config_name: str = "default",
    kubernetes: bool = False,
    config_path: Path | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    mps: MpsSettings | None = None,
) -> ApplyReport:
    """Converge this host on ``config``; NVML must be initialised.

    - MPS: every GPU an ``nvidia.com/gpu`` MPS resource selects goes to EXCLUSIVE_PROCESS (each
      MIG device handle when MIG is on; in Kubernetes MIG + MPS is refused as the plugin does).
    - Time-slicing: selected devices go to DEFAULT (an exclusive mode would admit one process).
    - Devices the agent made exclusive earlier and the config no longer puts under MPS go back
      to DEFAULT.
    - Outside Kubernetes: ``config_path`` (if given) is written and the MPS control daemon is
      started, restarted with new limits, or stopped.
    """
    settings = mps or MpsSettings()
    strategy = config.strategy
    state = _load_state(state_dir)
    made_exclusive: set[str] = set(state.get("exclusive_by_agent", []))
    report = ApplyReport(config_name=config_name, strategy=strategy, kubernetes=kubernetes)

    try:
        devices = _devices()
    except pynvml.NVMLError as exc:
        raise SharingApplyError(f"cannot enumerate GPUs through NVML: {exc}") from None

    wanted: dict[str, tuple[_Device, Any, int]] = {}
    replicated = config.replicated
    for device in devices:
        if strategy == "mps" and replicated is not None:
            selected = any(
                r.name == GPU_RESOURCE and r.matches(index=device.index, uuid=device.uuid) for r in replicated.resources
            )
            if not selected:
                continue
            if device.mig_enabled and kubernetes:
                raise SharingApplyError(
                    f"GPU {device.index} ({device.uuid}) has MIG enabled: the device plugin does not support "
                    "MPS with MIG; disable MIG or remove the GPU from the MPS resource's devices"
                )
            if device.mig_enabled and not device.mig_devices:
                raise SharingApplyError(
                    f"GPU {device.index} ({device.uuid}) has MIG enabled but no MIG devices to run MPS on"
                )
            for uuid, handle in _targets(device):
                wanted[uuid] = (device, handle, pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)
        elif strategy == "time-slicing" and replicated is not None:
            for position, (uuid, handle) in enumerate(_targets(device)):
                shared = any(
                    r.matches(index=device.index, uuid=uuid, mig_index=position if device.mig_enabled else None)
                    for r in replicated.resources
                )
                if shared:
                    wanted[uuid] = (device, handle, pynvml.NVML_COMPUTEMODE_DEFAULT)

    # Devices the agent made exclusive before and that this config does not keep under MPS.
    for device in devices:
        for uuid, handle in _targets(device):
            if uuid in made_exclusive and uuid not in wanted:
                wanted[uuid] = (device, handle, pynvml.NVML_COMPUTEMODE_DEFAULT)

    try:
        for uuid, (device, handle, mode) in wanted.items():
            change = _set_compute_mode(device, uuid, handle, mode)
            if mode == pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS:
                if change is not None:
                    made_exclusive.add(uuid)
            else:
                made_exclusive.discard(uuid)
            if change is not None:
                report.compute_mode_changes.append(change)
    finally:
        # Record progress even when a later device fails, so the next run knows what it owns.
        state["exclusive_by_agent"] = sorted(made_exclusive)
        _save_state(state_dir, state)

    if not kubernetes:
        if config_path is not None:
            _write_config(config_path, config)
            report.config_written = str(config_path)
        previous = state.get("mps_daemon") or {}
        env = mps_environment(config, devices, settings)
        if strategy == "mps":
            if previous.get("running") and previous.get("env") == env:
                report.mps_daemon = "running"
            else:
                if previous.get("running"):
                    stop_mps_daemon(settings, previous.get("env") or env)
                    report.mps_daemon = "restarted"
                else:
                    report.mps_daemon = "started"
                state["mps_daemon"] = {"running": False, "env": env}
                _save_state(state_dir, state)
                start_mps_daemon(settings, env)
                state["mps_daemon"] = {"running": True, "env": env}
            report.mps_environment = env
        elif previous.get("running"):
            stop_mps_daemon(settings, previous.get("env") or env)
            state["mps_daemon"] = {"running": False, "env": previous.get("env") or env}
            report.mps_daemon = "stopped"
        else:
            report.mps_daemon = "not-running"

    state["config_name"] = config_name
    state["strategy"] = strategy
    _save_state(state_dir, state)
    return report


class DeviceSharingStatus(BaseModel):
    index: int
    uuid: str
    mig_enabled: bool
    compute_modes: dict[str, str] = Field(description="GPU or MIG UUID -> compute mode")


def sharing_status() -> list[DeviceSharingStatus]:
    """Compute modes as NVML reports them now (MIG devices listed one by one)."""
    status = []
    for device in _devices():
        modes = {}
        for uuid, handle in _targets(device):
            try:
                mode = pynvml.nvmlDeviceGetComputeMode(handle)
                modes[uuid] = COMPUTE_MODE_NAMES.get(mode, str(mode))
            except pynvml.NVMLError as exc:
                modes[uuid] = f"unknown ({exc})"
        status.append(
            DeviceSharingStatus(
                index=device.index, uuid=device.uuid, mig_enabled=device.mig_enabled, compute_modes=modes
            )
        )
    return status
