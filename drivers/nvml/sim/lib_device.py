"""Simulated NVML: init, system queries, device identity and memory."""

from __future__ import annotations

from typing import Any

from drivers.nvml.sim import handles as H
from drivers.nvml.sim.codes import (
    ARGUMENT_VERSION_MISMATCH,
    BRAND_NVIDIA,
    BRAND_TESLA,
    NOT_FOUND,
    NOT_SUPPORTED,
    UNINITIALIZED,
    NvmlFail,
)
from drivers.nvml.sim.lib_base import LibBase, Target, api

_MIB = 2**20
_DEFAULT_SUBSYSTEM = 0x145F10DE


class DeviceApi(LibBase):
    # ---- init / system ----
    @api(needs_init=False)
    def nvmlInitWithFlags(self, flags: Any) -> None:
        self.init_count += 1

    @api(needs_init=False)
    def nvmlShutdown(self) -> None:
        if self.init_count == 0:
            raise NvmlFail(UNINITIALIZED)
        self.init_count -= 1

    @api()
    def nvmlSystemGetDriverVersion(self, buf: Any, length: Any) -> None:
        self._write_str(buf, length, self.host.spec.driver_version)

    @api()
    def nvmlSystemGetNVMLVersion(self, buf: Any, length: Any) -> None:
        self._write_str(buf, length, self.host.spec.effective_nvml_version)

    @api()
    def nvmlSystemGetCudaDriverVersion(self, ref: Any) -> None:
        H.set_value(ref, self.host.spec.cuda_driver_version)

    @api()
    def nvmlSystemGetCudaDriverVersion_v2(self, ref: Any) -> None:
        H.set_value(ref, self.host.spec.cuda_driver_version)

    # ---- handles ----
    @api()
    def nvmlDeviceGetCount_v2(self, ref: Any) -> None:
        H.set_value(ref, len(self.host.gpus))

    @api()
    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, out: Any) -> None:
        t = self._gpu(H.as_int(index), allow_lost=True)
        H.write_pointer(out, self.gpu_handle(t.index))

    @api()
    def nvmlDeviceGetHandleByUUID(self, uuid: Any, out: Any) -> None:
        want = H.as_bytes(uuid).decode().strip()
        for g in self.host.gpus:
            if g.uuid.lower() == want.lower():
                H.write_pointer(out, self.gpu_handle(g.index))
                return
            st = self.host.state.gpus[g.index]
            if st.mig_current:
                for gi in st.gis:
                    for ci in gi.cis:
                        if ci.uuid.lower() == want.lower():
                            H.write_pointer(out, self.mig_handle(g.index, gi.id, ci.id))
                            return
        raise NvmlFail(NOT_FOUND)

    @api()
    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: Any, out: Any) -> None:
        want = H.as_bytes(bus_id).decode().strip().upper()
        for g in self.host.gpus:
            if want in (g.bus_id.upper(), g.bus_id_legacy.upper()):
                H.write_pointer(out, self.gpu_handle(g.index))
                return
        raise NvmlFail(NOT_FOUND)

    # ---- identity ----
    def _name(self, t: Target) -> str:
        if t.gi is None or t.ci is None:
            return t.product.name
        return f"{t.product.name} MIG {t.product.ci_name(t.gi_profile(), t.ci_profile())}"

    @api()
    def nvmlDeviceGetName(self, handle: Any, buf: Any, length: Any) -> None:
        self._write_str(buf, length, self._name(self._dev(handle)))

    @api()
    def nvmlDeviceGetUUID(self, handle: Any, buf: Any, length: Any) -> None:
        t = self._dev(handle)
        self._write_str(buf, length, t.ci.uuid if t.ci else t.spec.uuid)

    @api()
    def nvmlDeviceGetSerial(self, handle: Any, buf: Any, length: Any) -> None:
        self._write_str(buf, length, self._dev(handle).spec.serial)

    @api()
    def nvmlDeviceGetIndex(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, self._parent(handle).index)

    @api()
    def nvmlDeviceGetMinorNumber(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, self._parent(handle).index)

    @api()
    def nvmlDeviceGetBrand(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        H.set_value(ref, BRAND_TESLA if t.product.name.startswith("Tesla") else BRAND_NVIDIA)

    @api()
    def nvmlDeviceGetPciInfo_v3(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        info = H.target(ref)
        info.busIdLegacy = t.spec.bus_id_legacy.encode()
        info.busId = t.spec.bus_id.encode()
        info.domain, info.bus, info.device = 0, t.spec.bus, 0
        info.pciDeviceId = t.product.pci_device_id or 0
        info.pciSubSystemId = t.product.pci_subsystem_id or _DEFAULT_SUBSYSTEM

    @api()
    def nvmlDeviceGetArchitecture(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, self._dev(handle).product.nvml_architecture)

    @api()
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any, major: Any, minor: Any) -> None:
        cc = self._dev(handle).product.compute_capability
        H.set_value(major, cc[0])
        H.set_value(minor, cc[1])

    @api()
    def nvmlDeviceGetAttributes_v2(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        if t.gi is None:
            raise NvmlFail(NOT_SUPPORTED)
        gp, cp = t.gi_profile(), t.ci_profile()
        a = H.target(ref)
        a.multiprocessorCount = t.product.ci_sm_count(gp, cp)
        a.sharedCopyEngineCount, a.sharedDecoderCount = gp.copy_engines, gp.decoders
        a.sharedEncoderCount, a.sharedJpegCount, a.sharedOfaCount = gp.encoders, gp.jpeg, gp.ofa
        a.gpuInstanceSliceCount, a.computeInstanceSliceCount = gp.slices, cp.slices
        a.memorySizeMB = gp.memory_mib

    # ---- memory ----
    def _memory(self, t: Target) -> tuple[int, int, int]:
        """(total, reserved, used) in bytes."""
        if t.gi is not None:
            used = sum(p.used_memory_mib for p in t.state.processes if p.gi_id == t.gi.id)
            return t.gi_profile().memory_mib * _MIB, 0, used * _MIB
        total = t.product.memory_mib
        used = sum(p.used_memory_mib for p in t.state.processes)
        return total * _MIB, min(total // 100, 512) * _MIB, used * _MIB

    @api()
    def nvmlDeviceGetMemoryInfo(self, handle: Any, ref: Any) -> None:
        total, reserved, used = self._memory(self._dev(handle))
        m = H.target(ref)
        m.total, m.used, m.free = total, used + reserved, total - used - reserved

    @api()
    def nvmlDeviceGetMemoryInfo_v2(self, handle: Any, ref: Any) -> None:
        total, reserved, used = self._memory(self._dev(handle))
        m = H.target(ref)
        if m.version != 0x02000028:
            raise NvmlFail(ARGUMENT_VERSION_MISMATCH)
        m.total, m.reserved, m.used, m.free = total, reserved, used, total - used - reserved
