"""Simulated NVML: sensors, compute mode, processes, ECC / page retirement / row remapping, events."""

from __future__ import annotations

import itertools
import time
from typing import Any

from drivers.nvml.sim import handles as H
from drivers.nvml.sim.codes import (
    COMPUTE_MODE_COUNT,
    COMPUTE_MODE_EXCLUSIVE_THREAD,
    ID_ANY,
    INVALID_ARGUMENT,
    MIG_ENABLE,
    NOT_SUPPORTED,
    TIMEOUT,
    NvmlFail,
)
from drivers.nvml.sim.lib_base import LibBase, Target, api
from drivers.nvml.sim.state import ProcState

_MIB = 2**20
_AMPERE = 7


class HealthApi(LibBase):
    _event_ids = itertools.count(1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_sets: dict[int, list[tuple[int, int]]] = {}

    # ---- sensors ----
    @api()
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, ref: Any) -> None:
        t = self._parent(handle)
        if H.as_int(sensor) != 0:
            raise NvmlFail(INVALID_ARGUMENT)
        H.set_value(ref, t.spec.group.temperature_c)

    @api()
    def nvmlDeviceGetTemperatureV(self, handle: Any, ref: Any) -> None:
        t = self._parent(handle)
        s = H.target(ref)
        if int(s.sensorType) != 0:
            raise NvmlFail(INVALID_ARGUMENT)
        s.temperature = t.spec.group.temperature_c

    @api()
    def nvmlDeviceGetPowerUsage(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, int(self._parent(handle).spec.group.power_draw_w * 1000))

    @api()
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, int(self._parent(handle).spec.group.power_limit_w * 1000))

    @api()
    def nvmlDeviceGetPowerManagementLimit(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, int(self._parent(handle).spec.group.power_limit_w * 1000))

    @api()
    def nvmlDeviceGetUtilizationRates(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        if t.is_mig or t.state.mig_current == MIG_ENABLE:
            raise NvmlFail(NOT_SUPPORTED)
        u = H.target(ref)
        u.gpu = t.spec.group.utilization_gpu_pct
        u.memory = t.spec.group.utilization_gpu_pct // 2

    # ---- compute mode ----
    @api()
    def nvmlDeviceGetComputeMode(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        if t.gi is not None and t.ci is not None:
            H.set_value(ref, t.state.mig_compute_modes.get(f"{t.gi.id}/{t.ci.id}", 0))
        else:
            H.set_value(ref, t.state.compute_mode)

    @api(mutating=True)
    def nvmlDeviceSetComputeMode(self, handle: Any, mode: Any) -> None:
        t = self._dev(handle)
        m = H.as_int(mode)
        if not 0 <= m < COMPUTE_MODE_COUNT:
            raise NvmlFail(INVALID_ARGUMENT)
        if m == COMPUTE_MODE_EXCLUSIVE_THREAD:
            raise NvmlFail(NOT_SUPPORTED)
        if t.gi is not None and t.ci is not None:
            t.state.mig_compute_modes[f"{t.gi.id}/{t.ci.id}"] = m
            self.host.record("nvmlDeviceSetComputeMode", t.index, gi=t.gi.id, ci=t.ci.id, mode=m)
            return
        if t.state.mig_current == MIG_ENABLE:
            raise NvmlFail(NOT_SUPPORTED)
        t.state.compute_mode = m
        self.host.record("nvmlDeviceSetComputeMode", t.index, mode=m)

    # ---- processes ----
    def _procs(self, t: Target) -> list[ProcState]:
        if t.gi is None or t.ci is None:
            return list(t.state.processes)
        return [p for p in t.state.processes if p.gi_id == t.gi.id and p.ci_id == t.ci.id]

    def _running(self, handle: Any, count: Any, arr: Any) -> None:
        procs = self._procs(self._dev(handle))
        if not self._count_protocol(count, arr, len(procs)):
            return
        a = H.target(arr)
        for i, p in enumerate(procs):
            a[i].pid, a[i].usedGpuMemory = p.pid, p.used_memory_mib * _MIB
            a[i].gpuInstanceId = ID_ANY if p.gi_id is None else p.gi_id
            a[i].computeInstanceId = ID_ANY if p.ci_id is None else p.ci_id

    @api()
    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, arr: Any) -> None:
        self._running(handle, count, arr)

    @api()
    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any, count: Any, arr: Any) -> None:
        self._running(handle, count, arr)

    # ---- ECC, page retirement, row remapping ----
    @api()
    def nvmlDeviceGetEccMode(self, handle: Any, cur: Any, pend: Any) -> None:
        self._parent(handle)
        H.set_value(cur, 1)
        H.set_value(pend, 1)

    @api()
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: Any, counter_type: Any, ref: Any) -> None:
        st = self._parent(handle).state
        table = {
            (0, 0): st.ecc_volatile_corrected,
            (1, 0): st.ecc_volatile_uncorrected,
            (0, 1): st.ecc_aggregate_corrected,
            (1, 1): st.ecc_aggregate_uncorrected,
        }
        key = (H.as_int(error_type), H.as_int(counter_type))
        if key not in table:
            raise NvmlFail(INVALID_ARGUMENT)
        H.set_value(ref, table[key])

    def _retired(self, handle: Any, cause: Any) -> list[int]:
        t = self._parent(handle)
        if t.product.nvml_architecture >= _AMPERE:
            raise NvmlFail(NOT_SUPPORTED)
        c = H.as_int(cause)
        if c not in (0, 1):
            raise NvmlFail(INVALID_ARGUMENT)
        n = t.state.retired_single_bit if c == 0 else t.state.retired_double_bit
        return [0x7_0000_0000 + (c << 28) + i * 0x1000 for i in range(n)]

    @api()
    def nvmlDeviceGetRetiredPages(self, handle: Any, cause: Any, count: Any, addrs: Any) -> None:
        pages = self._retired(handle, cause)
        if self._count_protocol(count, addrs, len(pages)):
            a = H.target(addrs)
            for i, p in enumerate(pages):
                a[i] = p

    @api()
    def nvmlDeviceGetRetiredPages_v2(self, handle: Any, cause: Any, count: Any, addrs: Any, times: Any = None) -> None:
        pages = self._retired(handle, cause)
        if self._count_protocol(count, addrs, len(pages)):
            a = H.target(addrs)
            ts = None if H.is_null(times) else H.target(times)
            for i, p in enumerate(pages):
                a[i] = p
                if ts is not None:
                    ts[i] = 1_700_000_000_000_000 + i
        return None

    @api()
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any, ref: Any) -> None:
        t = self._parent(handle)
        if t.product.nvml_architecture >= _AMPERE:
            raise NvmlFail(NOT_SUPPORTED)
        H.set_value(ref, 1 if t.state.retired_pending else 0)

    @api()
    def nvmlDeviceGetRemappedRows(self, handle: Any, corr: Any, unc: Any, pending: Any, failure: Any) -> None:
        t = self._parent(handle)
        if t.product.nvml_architecture < _AMPERE or t.state.mig_current == MIG_ENABLE:
            raise NvmlFail(NOT_SUPPORTED)
        st = t.state
        H.set_value(corr, st.remapped_correctable)
        H.set_value(unc, st.remapped_uncorrectable)
        H.set_value(pending, int(st.remapped_pending))
        H.set_value(failure, int(st.remapped_failure))

    # ---- events ----
    @api()
    def nvmlEventSetCreate(self, out: Any) -> None:
        set_id = next(self._event_ids)
        self.event_sets[set_id] = []
        H.write_pointer(out, H.event_set_value(set_id))

    def _event_set(self, ref: Any) -> int:
        set_id = H.decode(ref, H.EVENT_SET).gpu
        if set_id not in self.event_sets:
            raise NvmlFail(INVALID_ARGUMENT)
        return set_id

    @api()
    def nvmlDeviceRegisterEvents(self, handle: Any, types: Any, event_set: Any) -> None:
        t = self._parent(handle)
        self.event_sets[self._event_set(event_set)].append((t.index, H.as_int(types)))

    @api()
    def nvmlEventSetFree(self, event_set: Any) -> None:
        del self.event_sets[self._event_set(event_set)]

    @api()
    def nvmlEventSetWait_v2(self, event_set: Any, ref: Any, timeout_ms: Any) -> None:
        set_id = self._event_set(event_set)
        deadline = time.monotonic() + H.as_int(timeout_ms) / 1000
        while True:
            for gpu, mask in self.event_sets.get(set_id, []):
                st = self.host.state.gpus[gpu]
                for ev in st.events:
                    if ev.type & mask:
                        st.events.remove(ev)
                        self.host.save()
                        data = H.target(ref)
                        H.write_pointer_field(data, "device", self.gpu_handle(gpu))
                        data.eventType, data.eventData = ev.type, ev.data
                        data.gpuInstanceId = ID_ANY if ev.gi_id is None else ev.gi_id
                        data.computeInstanceId = ID_ANY if ev.ci_id is None else ev.ci_id
                        return
            left = deadline - time.monotonic()
            if left <= 0:
                raise NvmlFail(TIMEOUT)
            self.host.cond.wait(left)
