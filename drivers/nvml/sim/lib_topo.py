"""Simulated NVML: PCIe topology, NVLink, P2P and vGPU host queries."""

from __future__ import annotations

from typing import Any

from drivers.nvml.catalog import VgpuType
from drivers.nvml.sim import handles as H
from drivers.nvml.sim.codes import (
    HOST_VGPU_SRIOV,
    INVALID_ARGUMENT,
    MIG_ENABLE,
    NOT_SUPPORTED,
    P2P_CAPS_NVLINK,
    P2P_NOT_SUPPORTED,
    P2P_OK,
    TOPOLOGY_NODE,
    TOPOLOGY_SINGLE,
    TOPOLOGY_SYSTEM,
    VIRT_HOST_VGPU,
    VIRT_NONE,
    NvmlFail,
)
from drivers.nvml.sim.lib_base import LibBase, Target, api

# NVLink generation -> NVML_NVLINK_VERSION_* value
_NVLINK_VERSION = {1: 1, 2: 2, 3: 4, 4: 6, 5: 7, 6: 8}
_NVSWITCH_PCI_ID = 0x22A310DE
_NVSWITCH_COUNT = 4
_P2P_IOH_TOPOLOGY_NOT_SUPPORTED = 3
_VGPU_CLASS = {"C": "Compute", "Q": "Quadro", "B": "NVS", "A": "GRID"}


class TopoApi(LibBase):
    # ---- PCIe topology ----
    def _level(self, a: Target, b: Target) -> int:
        pcie = self.host.spec.pcie
        if a.index == b.index:
            return 0
        if a.index // pcie.gpus_per_switch == b.index // pcie.gpus_per_switch:
            return TOPOLOGY_SINGLE
        if a.index // pcie.gpus_per_numa_node == b.index // pcie.gpus_per_numa_node:
            return TOPOLOGY_NODE
        return TOPOLOGY_SYSTEM

    @api()
    def nvmlDeviceGetTopologyCommonAncestor(self, h1: Any, h2: Any, ref: Any) -> None:
        H.set_value(ref, self._level(self._parent(h1), self._parent(h2)))

    @api()
    def nvmlDeviceGetP2PStatus(self, h1: Any, h2: Any, index: Any, ref: Any) -> None:
        a, b = self._parent(h1), self._parent(h2)
        if a.index == b.index:
            raise NvmlFail(INVALID_ARGUMENT)
        cap = H.as_int(index[0] if isinstance(index, tuple) else index)
        if self.host.spec.nvlink is not None:
            H.set_value(ref, P2P_OK)
        elif cap == P2P_CAPS_NVLINK:
            H.set_value(ref, P2P_NOT_SUPPORTED)
        elif self._level(a, b) == TOPOLOGY_SYSTEM:
            H.set_value(ref, _P2P_IOH_TOPOLOGY_NOT_SUPPORTED)
        else:
            H.set_value(ref, P2P_OK)

    # ---- NVLink (all links go to NVSwitches) ----
    def _link(self, handle: Any, link: Any) -> tuple[Target, int]:
        t = self._parent(handle)
        nv = self.host.spec.nvlink
        if nv is None:
            raise NvmlFail(NOT_SUPPORTED)
        n = H.as_int(link)
        if not 0 <= n < nv.links_per_gpu:
            raise NvmlFail(INVALID_ARGUMENT)
        return t, n

    @api()
    def nvmlDeviceGetNvLinkState(self, handle: Any, link: Any, ref: Any) -> None:
        self._link(handle, link)
        H.set_value(ref, 1)

    @api()
    def nvmlDeviceGetNvLinkVersion(self, handle: Any, link: Any, ref: Any) -> None:
        self._link(handle, link)
        nv = self.host.spec.nvlink
        assert nv is not None
        H.set_value(ref, _NVLINK_VERSION[nv.version])

    @api()
    def nvmlDeviceGetNvLinkCapability(self, handle: Any, link: Any, cap: Any, ref: Any) -> None:
        self._link(handle, link)
        H.set_value(ref, 1)

    @api()
    def nvmlDeviceGetNvLinkRemotePciInfo_v2(self, handle: Any, link: Any, ref: Any) -> None:
        _, n = self._link(handle, link)
        bus = 0x05 + n % _NVSWITCH_COUNT
        info = H.target(ref)
        info.busIdLegacy = f"0000:{bus:02X}:00.0".encode()
        info.busId = f"00000000:{bus:02X}:00.0".encode()
        info.domain, info.bus, info.device = 0, bus, 0
        info.pciDeviceId, info.pciSubSystemId = _NVSWITCH_PCI_ID, 0

    # ---- vGPU host ----
    def _vgpu_host(self, handle: Any) -> Target:
        t = self._parent(handle)
        if not self.host.spec.vgpu:
            raise NvmlFail(NOT_SUPPORTED)
        return t

    def _vgpu_type(self, type_id: Any) -> VgpuType:
        want = H.as_int(type_id)
        for g in self.host.gpus:
            vt = g.product.vgpu_type(want)
            if vt is not None:
                return vt
        raise NvmlFail(INVALID_ARGUMENT)

    def _type_list(self, handle: Any, count: Any, arr: Any) -> None:
        # The vGPU manager offers MIG-backed types on a GPU in MIG mode and time-sliced types on one that is not.
        t = self._vgpu_host(handle)
        mig_on = t.state.mig_current == MIG_ENABLE
        ids = [v.type_id for v in t.product.vgpu_types if v.mig_backed == mig_on]
        if not self._count_protocol(count, arr, len(ids)):
            return
        a = H.target(arr)
        for i, v in enumerate(ids):
            a[i] = v

    @api()
    def nvmlDeviceGetSupportedVgpus(self, handle: Any, count: Any, arr: Any) -> None:
        self._type_list(handle, count, arr)

    @api()
    def nvmlDeviceGetCreatableVgpus(self, handle: Any, count: Any, arr: Any) -> None:
        self._type_list(handle, count, arr)  # no vGPU is ever active, so all supported are creatable

    @api()
    def nvmlDeviceGetActiveVgpus(self, handle: Any, count: Any, arr: Any) -> None:
        self._vgpu_host(handle)
        self._count_protocol(count, arr, 0)

    @api()
    def nvmlVgpuTypeGetName(self, type_id: Any, buf: Any, size: Any) -> None:
        self._write_str(buf, size, "NVIDIA " + self._vgpu_type(type_id).name)

    @api()
    def nvmlVgpuTypeGetClass(self, type_id: Any, buf: Any, size: Any) -> None:
        vt = self._vgpu_type(type_id)
        self._write_str(buf, size, _VGPU_CLASS.get(vt.vgpu_class, vt.vgpu_class))

    @api()
    def nvmlVgpuTypeGetFramebufferSize(self, type_id: Any, ref: Any) -> None:
        H.set_value(ref, self._vgpu_type(type_id).framebuffer_mib * 2**20)

    @api()
    def nvmlVgpuTypeGetMaxInstances(self, handle: Any, type_id: Any, ref: Any) -> None:
        t = self._vgpu_host(handle)
        vt = t.product.vgpu_type(H.as_int(type_id))
        if vt is None:
            raise NvmlFail(INVALID_ARGUMENT)
        H.set_value(ref, vt.max_instances)

    @api()
    def nvmlVgpuTypeGetMaxInstancesPerVm(self, type_id: Any, ref: Any) -> None:
        self._vgpu_type(type_id)
        H.set_value(ref, 1)

    @api()
    def nvmlVgpuTypeGetDeviceID(self, type_id: Any, dev: Any, sub: Any) -> None:
        vt = self._vgpu_type(type_id)
        prod = next(g.product for g in self.host.gpus if g.product.vgpu_type(vt.type_id) is not None)
        H.set_value(dev, prod.pci_device_id or 0)
        H.set_value(sub, ((0x1400 + vt.type_id) << 16) | 0x10DE)

    @api()
    def nvmlDeviceGetVirtualizationMode(self, handle: Any, ref: Any) -> None:
        self._parent(handle)
        H.set_value(ref, VIRT_HOST_VGPU if self.host.spec.vgpu else VIRT_NONE)

    @api()
    def nvmlDeviceGetHostVgpuMode(self, handle: Any, ref: Any) -> None:
        t = self._vgpu_host(handle)
        H.set_value(ref, HOST_VGPU_SRIOV if t.product.nvml_architecture >= 7 else 0)
