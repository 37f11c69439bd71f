"""Per-GPU health from NVML: XID events, ECC, retired pages, row remapping, bus loss, thermal, power.

``HealthMonitor`` is stateful. Each reason records how it clears:

- ``condition``: while the probe still sees it (thermal, power, pending retirement, a lost GPU
  that answers again, volatile double-bit ECC which resets with the GPU);
- ``expiry``: application-fault XIDs, after ``transient_clear_after_s`` without a repeat;
- ``reset``: XIDs whose remedy is a GPU reset, cleared by ``note_reset`` or a host reboot;
- ``reboot``: XIDs whose remedy is a reboot, cleared when the host's boot id changes;
- ``admin``: hardware-replacement XIDs, remap failures, admin quarantine; only ``clear`` ends them.

With ``state_path`` the reasons survive agent restarts (sticky states must not vanish because the
agent was restarted), and the boot id stored there is how a reboot is recognised.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.health.rules import HealthRules, worst
from drivers.contract.inventory import (
    EccCounters,
    GpuHealth,
    HealthReason,
    HealthState,
    HealthSummary,
    Inventory,
    RemappedRows,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

ClearsOn = Literal["condition", "expiry", "reset", "reboot", "admin"]
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_XID_CLEARS: dict[str, ClearsOn] = {
    "informational": "expiry",
    "application": "expiry",
    "gpu-reset": "reset",
    "node-reboot": "reboot",
    "hardware": "admin",
}


class HealthRecord(BaseModel):
    reason: HealthReason
    clears_on: ClearsOn
    expires_at: datetime | None = None
    count: int = 1


class GpuRecord(BaseModel):
    index: int
    reasons: dict[str, HealthRecord] = Field(default_factory=dict)


class HealthStateFile(BaseModel):
    boot_id: str | None = None
    gpus: dict[str, GpuRecord] = Field(default_factory=dict)


class _Probe(BaseModel):
    """What one look at a GPU found; ``conditions`` maps code -> (state, message)."""

    conditions: dict[str, tuple[HealthState, str]] = Field(default_factory=dict)
    ecc: EccCounters = Field(default_factory=EccCounters)
    retired_pages_pending: bool | None = None
    retired_pages: int | None = None
    remapped_rows: RemappedRows | None = None


def _optional(fn: Callable[..., Any], *args: Any) -> Any:
    """NVML value, or None when this GPU or driver does not support the query."""
    try:
        return fn(*args)
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_NoPermission):
        return None


class HealthMonitor:
    def __init__(
        self,
        rules: HealthRules | None = None,
        *,
        state_path: Path | None = None,
        boot_id_path: Path = BOOT_ID_PATH,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.rules = rules or HealthRules()
        self.state_path = state_path
        self.boot_id_path = boot_id_path
        self._clock = clock or (lambda: datetime.now(UTC))
        self._event_set: Any = None
        self._registered: set[str] = set()
        self._events_supported = True
        self._last: dict[str, GpuHealth] = {}
        self.state = self._load()
        self._check_reboot()

    # --- persistence ------------------------------------------------------------------------

    def _load(self) -> HealthStateFile:
        if self.state_path is None or not self.state_path.exists():
            return HealthStateFile()
        try:
            return HealthStateFile.model_validate_json(self.state_path.read_text())
        except (OSError, ValueError):
            # A corrupt state file must not stop health reporting; start over and say so.
            return HealthStateFile()

    def _save(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(self.state.model_dump_json(indent=2))
        os.replace(tmp, self.state_path)

    def _boot_id(self) -> str | None:
        try:
            return self.boot_id_path.read_text().strip() or None
        except OSError:
            return None

    def _check_reboot(self) -> None:
        boot_id = self._boot_id()
        if boot_id is not None and self.state.boot_id is not None and boot_id != self.state.boot_id:
            for gpu in self.state.gpus.values():
                gpu.reasons = {
                    code: rec for code, rec in gpu.reasons.items() if rec.clears_on not in ("reset", "reboot")
                }
        if boot_id is not None:
            self.state.boot_id = boot_id

    # --- admin actions ----------------------------------------------------------------------

    def clear(self, uuid: str, code: str | None = None) -> list[str]:
        """Admin clear: drop one reason (or all sticky ones) of a GPU. Returns the codes removed."""
        gpu = self.state.gpus.get(uuid)
        if gpu is None:
            return []
        removed = [c for c in gpu.reasons if code is None or c == code]
        for c in removed:
            del gpu.reasons[c]
        self._save()
        return removed

    def note_reset(self, uuid: str) -> list[str]:
        """The GPU was reset: drop the reasons a reset remedies."""
        gpu = self.state.gpus.get(uuid)
        if gpu is None:
            return []
        removed = [c for c, rec in gpu.reasons.items() if rec.clears_on == "reset"]
        for c in removed:
            del gpu.reasons[c]
        self._save()
        return removed

    def quarantine(self, uuid: str, message: str, index: int = -1) -> None:
        """Admin quarantine: sticks until ``clear``."""
        gpu = self.state.gpus.setdefault(uuid, GpuRecord(index=index))
        now = self._clock()
        gpu.reasons["admin-quarantine"] = HealthRecord(
            reason=HealthReason(code="admin-quarantine", message=message, severity="quarantined", since=now),
            clears_on="admin",
        )
        self._save()

    # --- XID events -------------------------------------------------------------------------

    def _ensure_events(self, handles: dict[str, Any]) -> None:
        if not self._events_supported:
            return
        try:
            if self._event_set is None:
                self._event_set = pynvml.nvmlEventSetCreate()
            for uuid, handle in handles.items():
                if uuid in self._registered:
                    continue
                try:
                    pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, self._event_set)
                except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_GpuIsLost):
                    continue
                self._registered.add(uuid)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
            self._events_supported = False

    def _drain_events(self, uuid_of: Callable[[Any], str | None]) -> list[tuple[str, int]]:
        if self._event_set is None:
            return []
        events: list[tuple[str, int]] = []
        while True:
            try:
                data = pynvml.nvmlEventSetWait(self._event_set, self.rules.event_wait_ms)
            except pynvml.NVMLError_Timeout:
                break
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
                self._events_supported = False
                break
            uuid = uuid_of(data.device)
            if uuid is not None and data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                events.append((uuid, int(data.eventData)))
        return events

    def record_xid(self, uuid: str, xid: int, index: int = -1) -> HealthReason:
        """Classify one XID and record it on ``uuid`` (also the entry point for log-sourced XIDs)."""
        now = self._clock()
        cls = self.rules.classify_xid(xid)
        gpu = self.state.gpus.setdefault(uuid, GpuRecord(index=index))
        code = f"xid-{xid}"
        clears_on = _XID_CLEARS[cls.action]
        expires = now + timedelta(seconds=self.rules.transient_clear_after_s) if clears_on == "expiry" else None
        message = f"XID {xid} {cls.mnemonic}: {cls.description} (action: {cls.action})"
        existing = gpu.reasons.get(code)
        if existing is not None:
            existing.count += 1
            existing.expires_at = expires
            existing.reason.message = message + f" x{existing.count}"
            return existing.reason
        reason = HealthReason(code=code, message=message, severity=cls.state, since=now)
        gpu.reasons[code] = HealthRecord(reason=reason, clears_on=clears_on, expires_at=expires)
        return reason

    # --- probes -----------------------------------------------------------------------------

    def _probe(self, uuid: str, handle: Any) -> _Probe:
        rules = self.rules
        probe = _Probe()
        try:
            probe.ecc = EccCounters(
                volatile_corrected=_optional(pynvml.nvmlDeviceGetTotalEccErrors, handle, 0, 0),
                volatile_uncorrected=_optional(pynvml.nvmlDeviceGetTotalEccErrors, handle, 1, 0),
                aggregate_corrected=_optional(pynvml.nvmlDeviceGetTotalEccErrors, handle, 0, 1),
                aggregate_uncorrected=_optional(pynvml.nvmlDeviceGetTotalEccErrors, handle, 1, 1),
            )
            dbe = probe.ecc.volatile_uncorrected
            if dbe is not None and dbe > rules.ecc_dbe_threshold:
                probe.conditions["ecc-dbe"] = (
                    rules.ecc_dbe_state,
                    f"{dbe} uncorrectable (double-bit) ECC errors since the last GPU reset",
                )

            pending = _optional(pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
            if pending is not None:
                probe.retired_pages_pending = bool(pending)
                if pending:
                    probe.conditions["retired-pages-pending"] = (
                        rules.retired_pages_pending_state,
                        "pages are pending retirement; reset the GPU or reload the driver to retire them",
                    )
            counts = [
                _optional(pynvml.nvmlDeviceGetRetiredPages, handle, cause)
                for cause in (
                    pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                    pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
                )
            ]
            if any(c is not None for c in counts):
                probe.retired_pages = sum(len(c) for c in counts if c is not None)
                if probe.retired_pages >= rules.retired_pages_limit:
                    probe.conditions["retired-pages-limit"] = (
                        rules.retired_pages_limit_state,
                        f"{probe.retired_pages} retired pages (limit {rules.retired_pages_limit}): replace the GPU",
                    )

            remap = _optional(pynvml.nvmlDeviceGetRemappedRows, handle)
            if remap is not None:
                corr, unc, is_pending, failed = remap
                probe.remapped_rows = RemappedRows(
                    correctable=int(corr), uncorrectable=int(unc), pending=bool(is_pending), failure=bool(failed)
                )
                if failed:
                    probe.conditions["remap-failure"] = (
                        rules.remap_failure_state,
                        "row remapping failed: the GPU has run out of spare rows; replace it",
                    )
                elif is_pending:
                    probe.conditions["remap-pending"] = (
                        rules.remap_pending_state,
                        "row remapping is pending; reset the GPU to apply it",
                    )

            temperature = _optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
            if temperature is not None:
                limit = rules.temperature_limit_c
                if limit is None:
                    limit = _optional(
                        pynvml.nvmlDeviceGetTemperatureThreshold, handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
                    )
                    limit = limit or rules.temperature_fallback_c
                probe.conditions.update(self._thermal(uuid, int(temperature), int(limit)))

            power = _optional(pynvml.nvmlDeviceGetPowerUsage, handle)
            power_limit = _optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            if power is not None and power_limit and power > power_limit * rules.power_limit_ratio:
                probe.conditions["power"] = (
                    rules.power_state,
                    f"power draw {power / 1000:.0f} W above {rules.power_limit_ratio:g} x "
                    f"the enforced limit {power_limit / 1000:.0f} W",
                )
        except pynvml.NVMLError_GpuIsLost:
            probe.conditions["gpu-lost"] = (rules.gpu_lost_state, "GPU has fallen off the bus (NVML: GPU is lost)")
        return probe

    def _thermal(self, uuid: str, temperature: int, limit: int) -> dict[str, tuple[HealthState, str]]:
        # hysteresis: a GPU hovering at the limit must not flap between states every observe
        record = self.state.gpus.get(uuid)
        active = record is not None and "thermal" in record.reasons
        threshold = limit - self.rules.temperature_hysteresis_c if active else limit
        if temperature >= threshold:
            return {"thermal": (self.rules.thermal_state, f"temperature {temperature} C at or above {limit} C")}
        return {}

    # --- observe ----------------------------------------------------------------------------

    def observe(self) -> dict[str, GpuHealth]:
        """Probe every GPU NVML knows (NVML must be initialised); return health by GPU UUID."""
        now = self._clock()
        handles: dict[str, Any] = {}
        probes: dict[str, _Probe] = {}
        index_of: dict[str, int] = {}
        known_by_index = {rec.index: uuid for uuid, rec in self.state.gpus.items()}
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                uuid = pynvml.nvmlDeviceGetUUID(handle)
            except pynvml.NVMLError_GpuIsLost:
                uuid = known_by_index.get(index, f"unknown-gpu-{index}")
                probes[uuid] = _Probe(
                    conditions={
                        "gpu-lost": (self.rules.gpu_lost_state, "GPU has fallen off the bus (NVML: GPU is lost)")
                    }
                )
                index_of[uuid] = index
                continue
            handles[uuid] = handle
            index_of[uuid] = index
        for uuid, handle in handles.items():
            probes[uuid] = self._probe(uuid, handle)

        self._ensure_events(handles)

        def uuid_of(device: Any) -> str | None:
            try:
                return str(pynvml.nvmlDeviceGetUUID(device))
            except pynvml.NVMLError:
                return None

        for uuid, xid in self._drain_events(uuid_of):
            self.record_xid(uuid, xid, index_of.get(uuid, -1))

        result: dict[str, GpuHealth] = {}
        for uuid, probe in probes.items():
            gpu = self.state.gpus.setdefault(uuid, GpuRecord(index=index_of[uuid]))
            gpu.index = index_of[uuid]
            for code, record in list(gpu.reasons.items()):
                if (record.clears_on == "condition" and code not in probe.conditions) or (
                    record.clears_on == "expiry" and record.expires_at is not None and record.expires_at <= now
                ):
                    del gpu.reasons[code]
            for code, (severity, message) in probe.conditions.items():
                existing = gpu.reasons.get(code)
                if existing is not None and existing.clears_on == "condition":
                    existing.reason.message = message
                    existing.reason.severity = severity
                else:
                    clears: ClearsOn = "admin" if code == "remap-failure" else "condition"
                    gpu.reasons[code] = HealthRecord(
                        reason=HealthReason(code=code, message=message, severity=severity, since=now),
                        clears_on=clears,
                    )
            reasons = sorted((r.reason for r in gpu.reasons.values()), key=lambda r: (r.since, r.code))
            result[uuid] = GpuHealth(
                state=worst([r.severity for r in reasons]),
                reasons=reasons,
                ecc=probe.ecc,
                retired_pages_pending=probe.retired_pages_pending,
                retired_pages=probe.retired_pages,
                remapped_rows=probe.remapped_rows,
            )
        self._save()
        self._last = result
        return result

    def annotate(self, inventory: Inventory, health: dict[str, GpuHealth] | None = None) -> Inventory:
        """A copy of ``inventory`` with each GPU's health and the host summary filled in."""
        health = health if health is not None else (self._last or self.observe())
        result = inventory.model_copy(deep=True)
        summary = HealthSummary()
        for gpu in result.gpus:
            if gpu.uuid in health:
                gpu.health = health[gpu.uuid]
            setattr(summary, gpu.health.state, getattr(summary, gpu.health.state) + 1)
        result.health = summary
        return result

    def close(self) -> None:
        if self._event_set is not None:
            try:
                pynvml.nvmlEventSetFree(self._event_set)
            except pynvml.NVMLError:
                pass
            self._event_set = None
            self._registered.clear()


def health_report(health: dict[str, GpuHealth]) -> dict[str, Any]:
    """JSON-ready summary used by the CLI."""
    return {uuid: json.loads(h.model_dump_json()) for uuid, h in health.items()}
