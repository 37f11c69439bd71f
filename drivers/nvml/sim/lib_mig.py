"""Simulated NVML: MIG mode, GPU instances, compute instances and MIG device handles."""

from __future__ import annotations

from typing import Any

from drivers.gpus.catalog import CiProfile, MigProfile
from drivers.nvml.sim import handles as H
from drivers.nvml.sim import mig
from drivers.nvml.sim.codes import (
    ARGUMENT_VERSION_MISMATCH,
    IN_USE,
    INSUFFICIENT_SIZE,
    INVALID_ARGUMENT,
    MIG_DISABLE,
    MIG_ENABLE,
    NOT_FOUND,
    NOT_SUPPORTED,
    RESET_REQUIRED,
    SUCCESS,
    NvmlFail,
)
from drivers.nvml.sim.lib_base import LibBase, Target, api
from drivers.nvml.sim.state import GiState

_GI_PROFILE_COUNT = 0x12
_CI_PROFILE_COUNT = 0x9
_GI_INFO_V2 = 0x02000098
_CI_INFO_V2 = 0x02000088


class MigApi(LibBase):
    # ---- mode ----
    @api()
    def nvmlDeviceGetMigMode(self, handle: Any, cur: Any, pend: Any) -> None:
        t = self._parent(handle)
        if not t.product.mig_capable:
            raise NvmlFail(NOT_SUPPORTED)
        H.set_value(cur, t.state.mig_current)
        H.set_value(pend, t.state.mig_pending)

    @api(mutating=True)
    def nvmlDeviceSetMigMode(self, handle: Any, mode: Any, status: Any) -> None:
        t = self._parent(handle)
        if not t.product.mig_capable:
            raise NvmlFail(NOT_SUPPORTED)
        m = H.as_int(mode)
        if m not in (MIG_DISABLE, MIG_ENABLE):
            raise NvmlFail(INVALID_ARGUMENT)
        st = t.state
        if m == st.mig_current and m == st.mig_pending:
            H.set_value(status, SUCCESS)
            return
        st.mig_pending = m
        if m == st.mig_current:
            result = SUCCESS  # cancels a pending change
        elif st.processes:
            result = IN_USE
        elif self.host.spec.mig_reset_required:
            result = RESET_REQUIRED
        else:
            st.mig_current = m
            st.gis = []
            st.mig_compute_modes = {}
            result = SUCCESS
        H.set_value(status, result)
        self.host.record("nvmlDeviceSetMigMode", t.index, mode=m, activation_status=result)

    # ---- GPU instance profiles ----
    def _gi_profile_by_index(self, t: Target, index: int) -> MigProfile:
        if not t.product.mig_capable or t.state.mig_current != MIG_ENABLE:
            raise NvmlFail(NOT_SUPPORTED)
        if not 0 <= index < _GI_PROFILE_COUNT:
            raise NvmlFail(INVALID_ARGUMENT)
        prof = t.product.profile_by_index(index)
        if prof is None:
            raise NvmlFail(NOT_SUPPORTED)
        return prof

    def _gi_profile_by_id(self, t: Target, profile_id: int) -> MigProfile:
        prof = t.product.profile_by_id(profile_id)
        if prof is None:
            raise NvmlFail(INVALID_ARGUMENT)
        return prof

    @staticmethod
    def _fill_gi_info(info: Any, t: Target, p: MigProfile, with_name: bool) -> None:
        info.id, info.isP2pSupported, info.sliceCount = p.profile_id, 0, p.slices
        info.instanceCount, info.multiprocessorCount = p.max_instances, p.sm_count
        info.copyEngineCount, info.decoderCount, info.encoderCount = p.copy_engines, p.decoders, p.encoders
        info.jpegCount, info.ofaCount, info.memorySizeMB = p.jpeg, p.ofa, p.memory_mib
        if with_name:
            info.name = f"MIG {p.name}".encode()

    @api()
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, index: Any, ref: Any) -> None:
        t = self._parent(handle)
        self._fill_gi_info(H.target(ref), t, self._gi_profile_by_index(t, H.as_int(index)), False)

    @api()
    def nvmlDeviceGetGpuInstanceProfileInfoV(self, handle: Any, index: Any, ref: Any) -> None:
        t = self._parent(handle)
        info = H.target(ref)
        if info.version != _GI_INFO_V2:
            raise NvmlFail(ARGUMENT_VERSION_MISMATCH)
        self._fill_gi_info(info, t, self._gi_profile_by_index(t, H.as_int(index)), True)

    @api()
    def nvmlDeviceGetGpuInstanceProfileInfoByIdV(self, handle: Any, profile_id: Any, ref: Any) -> None:
        t = self._mig_parent(handle)
        info = H.target(ref)
        if info.version != _GI_INFO_V2:
            raise NvmlFail(ARGUMENT_VERSION_MISMATCH)
        self._fill_gi_info(info, t, self._gi_profile_by_id(t, H.as_int(profile_id)), True)

    @api()
    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, profile_id: Any, ref: Any) -> None:
        t = self._mig_parent(handle)
        prof = self._gi_profile_by_id(t, H.as_int(profile_id))
        H.set_value(ref, mig.remaining_gi_capacity(t.product, t.state, prof))

    @api()
    def nvmlDeviceGetGpuInstancePossiblePlacements_v2(self, handle: Any, profile_id: Any, arr: Any, count: Any) -> None:
        t = self._parent(handle)
        if not t.product.mig_capable:
            raise NvmlFail(NOT_SUPPORTED)
        places = self._gi_profile_by_id(t, H.as_int(profile_id)).placements
        self._fill_placements(arr, count, list(places))

    @staticmethod
    def _fill_placements(arr: Any, count: Any, places: list[tuple[int, int]]) -> None:
        if H.is_null(arr):
            H.set_value(count, len(places))
            return
        if H.as_int(count) < len(places):
            H.set_value(count, len(places))
            raise NvmlFail(INSUFFICIENT_SIZE)
        a = H.target(arr)
        for i, (start, size) in enumerate(places):
            a[i].start, a[i].size = start, size
        H.set_value(count, len(places))

    # ---- GPU instances ----
    def _create_gi(self, handle: Any, profile_id: Any, placement: tuple[int, int] | None, out: Any) -> None:
        t = self._mig_parent(handle)
        prof = self._gi_profile_by_id(t, H.as_int(profile_id))
        if placement is None:
            start, size = mig.pick_gi_placement(t.product, t.state, prof)
        else:
            start, size = placement
            mig.check_gi_placement(t.product, t.state, prof, start, size)
        gi = mig.new_gi(t.product, t.state, prof, start, size)
        H.write_pointer(out, self.gi_handle(t.index, gi.id))
        self.host.record("nvmlDeviceCreateGpuInstance", t.index, profile_id=prof.profile_id, gi=gi.id, start=start)

    @api(mutating=True)
    def nvmlDeviceCreateGpuInstance(self, handle: Any, profile_id: Any, out: Any) -> None:
        self._create_gi(handle, profile_id, None, out)

    @api(mutating=True)
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profile_id: Any, placement: Any, out: Any) -> None:
        p = H.target(placement)
        self._create_gi(handle, profile_id, (int(p.start), int(p.size)), out)

    @api()
    def nvmlDeviceGetGpuInstances(self, handle: Any, profile_id: Any, arr: Any, count: Any) -> None:
        t = self._mig_parent(handle)
        prof = self._gi_profile_by_id(t, H.as_int(profile_id))
        gis = [g for g in t.state.gis if g.profile_id == prof.profile_id]
        if H.is_null(arr):
            H.set_value(count, len(gis))
            return
        if H.as_int(count) < len(gis):
            H.set_value(count, len(gis))
            raise NvmlFail(INSUFFICIENT_SIZE)
        for i, g in enumerate(gis):
            H.write_pointer_array(arr, i, self.gi_handle(t.index, g.id))
        H.set_value(count, len(gis))

    @api()
    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: Any, out: Any) -> None:
        t = self._mig_parent(handle)
        gi = t.state.gi(H.as_int(gi_id))
        if gi is None:
            raise NvmlFail(NOT_FOUND)
        H.write_pointer(out, self.gi_handle(t.index, gi.id))

    @api()
    def nvmlGpuInstanceGetInfo(self, handle: Any, ref: Any) -> None:
        t, gi, _ = self._gi(handle)
        info = H.target(ref)
        H.write_pointer_field(info, "device", self.gpu_handle(t.index))
        info.id, info.profileId = gi.id, gi.profile_id
        info.placement.start, info.placement.size = gi.start, gi.size

    @api(mutating=True)
    def nvmlGpuInstanceDestroy(self, handle: Any) -> None:
        t, gi, _ = self._gi(handle)
        if gi.cis or any(p.gi_id == gi.id for p in t.state.processes):
            raise NvmlFail(IN_USE)
        t.state.gis = [g for g in t.state.gis if g.id != gi.id]
        self.host.record("nvmlGpuInstanceDestroy", t.index, gi=gi.id)

    # ---- compute instances ----
    def _ci_profile(self, t: Target, gp: MigProfile, index: int) -> CiProfile:
        if not 0 <= index < _CI_PROFILE_COUNT:
            raise NvmlFail(INVALID_ARGUMENT)
        cp = next((c for c in t.product.ci_profiles_for(gp) if c.index == index), None)
        if cp is None:
            raise NvmlFail(NOT_SUPPORTED)
        return cp

    def _fill_ci_info(self, info: Any, t: Target, gp: MigProfile, cp: CiProfile, with_name: bool) -> None:
        info.id, info.sliceCount, info.instanceCount = cp.index, cp.slices, cp.max_instances
        info.multiprocessorCount = t.product.ci_sm_count(gp, cp)
        info.sharedCopyEngineCount, info.sharedDecoderCount = gp.copy_engines, gp.decoders
        info.sharedEncoderCount, info.sharedJpegCount, info.sharedOfaCount = gp.encoders, gp.jpeg, gp.ofa
        if with_name:
            info.name = f"MIG {t.product.ci_name(gp, cp)}".encode()

    @api()
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, handle: Any, index: Any, eng: Any, ref: Any) -> None:
        t, _, gp = self._gi(handle)
        if H.as_int(eng) != 0:
            raise NvmlFail(INVALID_ARGUMENT)
        self._fill_ci_info(H.target(ref), t, gp, self._ci_profile(t, gp, H.as_int(index)), False)

    @api()
    def nvmlGpuInstanceGetComputeInstanceProfileInfoV(self, handle: Any, index: Any, eng: Any, ref: Any) -> None:
        t, _, gp = self._gi(handle)
        info = H.target(ref)
        if info.version != _CI_INFO_V2:
            raise NvmlFail(ARGUMENT_VERSION_MISMATCH)
        if H.as_int(eng) != 0:
            raise NvmlFail(INVALID_ARGUMENT)
        self._fill_ci_info(info, t, gp, self._ci_profile(t, gp, H.as_int(index)), True)

    def _create_ci(self, handle: Any, profile_id: Any, start: int | None, out: Any) -> None:
        t, gi, gp = self._gi(handle)
        cp = self._ci_profile(t, gp, H.as_int(profile_id))
        s, size = mig.pick_ci_placement(gi, cp, start)
        self.host.state.uuid_serial += 1
        ci = mig.new_ci(gi, cp, s, size, self.host.spec.hostname, t.index, self.host.state.uuid_serial)
        H.write_pointer(out, self.ci_handle(t.index, gi.id, ci.id))
        self.host.record("nvmlGpuInstanceCreateComputeInstance", t.index, gi=gi.id, ci=ci.id, profile_id=cp.index)

    @api(mutating=True)
    def nvmlGpuInstanceCreateComputeInstance(self, handle: Any, profile_id: Any, out: Any) -> None:
        self._create_ci(handle, profile_id, None, out)

    @api(mutating=True)
    def nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        self, handle: Any, profile_id: Any, placement: Any, out: Any
    ) -> None:
        p = H.target(placement)
        t, _gi, gp = self._gi(handle)
        cp = self._ci_profile(t, gp, H.as_int(profile_id))
        if int(p.size) != cp.slices:
            raise NvmlFail(INVALID_ARGUMENT)
        self._create_ci(handle, profile_id, int(p.start), out)

    @api()
    def nvmlGpuInstanceGetComputeInstances(self, handle: Any, profile_id: Any, arr: Any, count: Any) -> None:
        t, gi, gp = self._gi(handle)
        cp = self._ci_profile(t, gp, H.as_int(profile_id))
        cis = [c for c in gi.cis if c.profile_id == cp.index]
        if H.is_null(arr):
            H.set_value(count, len(cis))
            return
        if H.as_int(count) < len(cis):
            H.set_value(count, len(cis))
            raise NvmlFail(INSUFFICIENT_SIZE)
        for i, c in enumerate(cis):
            H.write_pointer_array(arr, i, self.ci_handle(t.index, gi.id, c.id))
        H.set_value(count, len(cis))

    @api()
    def nvmlGpuInstanceGetComputeInstanceById(self, handle: Any, ci_id: Any, out: Any) -> None:
        t, gi, _ = self._gi(handle)
        want = H.as_int(ci_id)
        if not any(c.id == want for c in gi.cis):
            raise NvmlFail(NOT_FOUND)
        H.write_pointer(out, self.ci_handle(t.index, gi.id, want))

    @api()
    def nvmlGpuInstanceGetComputeInstanceRemainingCapacity(self, handle: Any, profile_id: Any, ref: Any) -> None:
        t, gi, gp = self._gi(handle)
        H.set_value(ref, mig.remaining_ci_capacity(gi, self._ci_profile(t, gp, H.as_int(profile_id))))

    @api()
    def nvmlGpuInstanceGetComputeInstancePossiblePlacements(
        self, handle: Any, profile_id: Any, arr: Any, count: Any
    ) -> None:
        t, _, gp = self._gi(handle)
        self._fill_placements(arr, count, mig.ci_placements(self._ci_profile(t, gp, H.as_int(profile_id))))

    def _ci(self, handle: Any) -> tuple[Target, GiState, Any]:
        h = H.decode(handle, H.CI)
        t = self._gpu(h.gpu)
        gi = t.state.gi(h.gi) if t.state.mig_current == MIG_ENABLE else None
        ci = next((c for c in gi.cis if c.id == h.ci), None) if gi else None
        if gi is None or ci is None:
            raise NvmlFail(INVALID_ARGUMENT)
        return t, gi, ci

    @api()
    def nvmlComputeInstanceGetInfo_v2(self, handle: Any, ref: Any) -> None:
        t, gi, ci = self._ci(handle)
        info = H.target(ref)
        H.write_pointer_field(info, "device", self.gpu_handle(t.index))
        H.write_pointer_field(info, "gpuInstance", self.gi_handle(t.index, gi.id))
        info.id, info.profileId = ci.id, ci.profile_id
        info.placement.start, info.placement.size = ci.start, ci.size

    @api(mutating=True)
    def nvmlComputeInstanceDestroy(self, handle: Any) -> None:
        t, gi, ci = self._ci(handle)
        if any(p.gi_id == gi.id and p.ci_id == ci.id for p in t.state.processes):
            raise NvmlFail(IN_USE)
        gi.cis = [c for c in gi.cis if c.id != ci.id]
        t.state.mig_compute_modes.pop(f"{gi.id}/{ci.id}", None)
        self.host.record("nvmlComputeInstanceDestroy", t.index, gi=gi.id, ci=ci.id)

    # ---- MIG device handles ----
    def _mig_devices(self, t: Target) -> list[tuple[int, int]]:
        return [(g.id, c.id) for g in sorted(t.state.gis, key=lambda g: g.id) for c in g.cis]

    @api()
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any, ref: Any) -> None:
        t = self._parent(handle)
        on = t.product.mig_capable and t.state.mig_current == MIG_ENABLE
        H.set_value(ref, t.product.max_mig_instances if on else 0)

    @api()
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: Any, out: Any) -> None:
        t = self._mig_parent(handle)
        i = H.as_int(index)
        if not 0 <= i < t.product.max_mig_instances:
            raise NvmlFail(INVALID_ARGUMENT)
        devs = self._mig_devices(t)
        if i >= len(devs):
            raise NvmlFail(NOT_FOUND)
        H.write_pointer(out, self.mig_handle(t.index, *devs[i]))

    @api()
    def nvmlDeviceIsMigDeviceHandle(self, handle: Any, ref: Any) -> None:
        H.set_value(ref, 1 if self._dev(handle).is_mig else 0)

    @api()
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any, out: Any) -> None:
        t = self._dev(handle)
        if not t.is_mig:
            raise NvmlFail(INVALID_ARGUMENT)
        H.write_pointer(out, self.gpu_handle(t.index))

    @api()
    def nvmlDeviceGetGpuInstanceId(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        if t.gi is None:
            raise NvmlFail(NOT_SUPPORTED)
        H.set_value(ref, t.gi.id)

    @api()
    def nvmlDeviceGetComputeInstanceId(self, handle: Any, ref: Any) -> None:
        t = self._dev(handle)
        if t.ci is None:
            raise NvmlFail(NOT_SUPPORTED)
        H.set_value(ref, t.ci.id)
