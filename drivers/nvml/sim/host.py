"""The simulated host: spec + persistent state + the library object, plus out-of-band actions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.nvml.sim import mig
from drivers.nvml.sim.codes import (
    EVENT_DOUBLE_BIT_ECC,
    EVENT_SINGLE_BIT_ECC,
    EVENT_XID,
    MIG_DISABLE,
    MIG_ENABLE,
    NvmlFail,
)
from drivers.nvml.sim.hostspec import GpuSpec, HostSpec, HostSpecError
from drivers.nvml.sim.state import EventState, GpuState, HostState, ProcState, load_state, save_state


class SimulatedCrash(BaseException):
    """Raised by ``fail_after``: the process 'died' in an NVML call; the call did NOT take effect."""


class SimulatorError(RuntimeError):
    """An out-of-band action was refused (e.g. GPU reset while processes run)."""


@dataclass
class Mutation:
    call: str
    gpu: int
    detail: dict[str, Any] = field(default_factory=dict)


def _initial_gpu(spec: HostSpec, g: GpuSpec) -> GpuState:
    grp = g.group
    mode = MIG_ENABLE if grp.mig == "enabled" else MIG_DISABLE
    st = GpuState(mig_current=mode, mig_pending=mode, lost=grp.lost)
    st.ecc_volatile_corrected = grp.ecc.volatile_corrected
    st.ecc_volatile_uncorrected = grp.ecc.volatile_uncorrected
    st.ecc_aggregate_corrected = max(grp.ecc.aggregate_corrected, grp.ecc.volatile_corrected)
    st.ecc_aggregate_uncorrected = max(grp.ecc.aggregate_uncorrected, grp.ecc.volatile_uncorrected)
    if grp.retired_pages:
        st.retired_single_bit = grp.retired_pages.single_bit
        st.retired_double_bit = grp.retired_pages.double_bit
        st.retired_pending = grp.retired_pages.pending
    if grp.remapped_rows:
        rr = grp.remapped_rows
        st.remapped_correctable, st.remapped_uncorrectable = rr.correctable, rr.uncorrectable
        st.remapped_pending, st.remapped_failure = rr.pending, rr.failure
    st.events = [EventState(type=EVENT_XID, data=x) for x in grp.xid_events]
    return st


class SimulatedHost:
    """Owns the spec, the state (saved to ``state_path`` after every change) and the library."""

    def __init__(self, spec: HostSpec, state_path: Path | None = None, source: str = "<spec>") -> None:
        from drivers.nvml.sim.library import SimulatedNvml

        self.spec = spec
        self.source = source
        self.gpus: list[GpuSpec] = spec.expand()
        self.state_path = state_path
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.mutation_log: list[Mutation] = []
        self._crash_countdown: int | None = None
        loaded = load_state(state_path, spec)
        self.state: HostState = loaded if loaded is not None else self._initial_state()
        if loaded is None:
            self.save()
        self.library = SimulatedNvml(self)

    # ---- state ----
    def _initial_state(self) -> HostState:
        state = HostState(fingerprint=self.spec.fingerprint(), gpus=[])
        for g in self.gpus:
            st = _initial_gpu(self.spec, g)
            state.gpus.append(st)
            prod = g.product
            try:
                for inst in g.group.mig_instances:
                    prof = prod.profile_by_name(inst.profile)
                    assert prof is not None
                    if inst.start is None:
                        start, size = mig.pick_gi_placement(prod, st, prof)
                    else:
                        start, size = inst.start, prof.placement_size
                        mig.check_gi_placement(prod, st, prof, start, size)
                    gi = mig.new_gi(prod, st, prof, start, size)
                    full = mig.full_ci_profile(prod, prof)
                    if full is not None:
                        state.uuid_serial += 1
                        mig.new_ci(gi, full, 0, full.slices, self.spec.hostname, g.index, state.uuid_serial)
            except NvmlFail as exc:
                raise HostSpecError(
                    f"invalid host spec {self.source}: gpus (GPU {g.index}): mig_instances do not fit "
                    f"({exc}); check placements and counts"
                ) from None
            for p in g.group.processes:
                if p.gpu_instance_id is not None:
                    gi_state = st.gi(p.gpu_instance_id)
                    if gi_state is None:
                        raise HostSpecError(
                            f"invalid host spec {self.source}: processes: pid {p.pid} names GPU instance "
                            f"{p.gpu_instance_id}, GPU {g.index} has {[x.id for x in st.gis]}"
                        )
                    ci_id = p.compute_instance_id
                    if ci_id is None:
                        ci_id = gi_state.cis[0].id if gi_state.cis else 0
                    st.processes.append(
                        ProcState(
                            pid=p.pid,
                            used_memory_mib=p.used_memory_mib,
                            name=p.name,
                            gi_id=p.gpu_instance_id,
                            ci_id=ci_id,
                        )
                    )
                else:
                    st.processes.append(ProcState(pid=p.pid, used_memory_mib=p.used_memory_mib, name=p.name))
        return state

    @property
    def hostname(self) -> str:
        return self.spec.hostname

    def save(self) -> None:
        with self.lock:
            save_state(self.state_path, self.state)

    def gpu_state(self, index: int) -> GpuState:
        if not 0 <= index < len(self.gpus):
            raise SimulatorError(f"no GPU {index}; this host has {len(self.gpus)}")
        return self.state.gpus[index]

    # ---- hooks used by the library ----
    def before_mutation(self) -> None:
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown <= 0:
                self._crash_countdown = None
                raise SimulatedCrash("simulated crash in a mutating NVML call (it did not take effect)")

    def record(self, call: str, gpu: int, **detail: Any) -> None:
        self.mutation_log.append(Mutation(call, gpu, detail))
        self.save()

    # ---- out-of-band actions ----
    def fail_after(self, n: int) -> None:
        """The n-th next mutating NVML call raises SimulatedCrash without taking effect (n >= 1)."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self._crash_countdown = n

    def reset_gpu(self, index: int) -> None:
        """Simulate a GPU reset: applies pending MIG mode, drops GIs/CIs and volatile ECC counters."""
        with self.lock:
            st = self.gpu_state(index)
            if st.processes:
                pids = ", ".join(str(p.pid) for p in st.processes)
                raise SimulatorError(f"GPU {index} cannot be reset: processes {pids} are running on it")
            st.mig_current = st.mig_pending
            st.gis = []
            st.mig_compute_modes = {}
            st.ecc_volatile_corrected = st.ecc_volatile_uncorrected = 0
            st.retired_pending = False
            st.remapped_pending = False
            st.lost = False
            self.save()

    def add_process(
        self,
        index: int,
        pid: int,
        used_memory_mib: int,
        gpu_instance_id: int | None = None,
        compute_instance_id: int | None = None,
        name: str | None = None,
    ) -> None:
        with self.lock:
            st = self.gpu_state(index)
            if any(p.pid == pid for g in self.state.gpus for p in g.processes):
                raise SimulatorError(f"pid {pid} already runs on this host")
            if gpu_instance_id is not None:
                gi = st.gi(gpu_instance_id)
                if gi is None:
                    raise SimulatorError(f"GPU {index} has no GPU instance {gpu_instance_id}")
                if compute_instance_id is None:
                    compute_instance_id = gi.cis[0].id if gi.cis else 0
            elif st.mig_current == MIG_ENABLE:
                raise SimulatorError(f"GPU {index} is in MIG mode: give gpu_instance_id")
            st.processes.append(
                ProcState(
                    pid=pid,
                    used_memory_mib=used_memory_mib,
                    name=name,
                    gi_id=gpu_instance_id,
                    ci_id=compute_instance_id,
                )
            )
            self.save()

    def remove_process(self, pid: int) -> None:
        with self.lock:
            found = False
            for st in self.state.gpus:
                before = len(st.processes)
                st.processes = [p for p in st.processes if p.pid != pid]
                found = found or len(st.processes) != before
            if not found:
                raise SimulatorError(f"no process {pid}")
            self.save()

    def _queue(self, index: int, event: EventState) -> None:
        self.gpu_state(index).events.append(event)
        self.save()
        self.cond.notify_all()

    def inject_xid(self, index: int, xid: int) -> None:
        with self.lock:
            self._queue(index, EventState(type=EVENT_XID, data=xid))

    def inject_ecc(self, index: int, corrected: int = 0, uncorrected: int = 0) -> None:
        with self.lock:
            st = self.gpu_state(index)
            st.ecc_volatile_corrected += corrected
            st.ecc_aggregate_corrected += corrected
            st.ecc_volatile_uncorrected += uncorrected
            st.ecc_aggregate_uncorrected += uncorrected
            if corrected:
                self._queue(index, EventState(type=EVENT_SINGLE_BIT_ECC, data=0))
            if uncorrected:
                self._queue(index, EventState(type=EVENT_DOUBLE_BIT_ECC, data=0))
            self.save()

    def set_remapped_rows(
        self, index: int, correctable: int = 0, uncorrectable: int = 0, pending: bool = False, failure: bool = False
    ) -> None:
        with self.lock:
            st = self.gpu_state(index)
            st.remapped_correctable, st.remapped_uncorrectable = correctable, uncorrectable
            st.remapped_pending, st.remapped_failure = pending, failure
            self.save()

    def set_retired_pages(self, index: int, single_bit: int = 0, double_bit: int = 0, pending: bool = False) -> None:
        with self.lock:
            st = self.gpu_state(index)
            st.retired_single_bit, st.retired_double_bit, st.retired_pending = single_bit, double_bit, pending
            self.save()

    def set_lost(self, index: int, lost: bool = True) -> None:
        with self.lock:
            self.gpu_state(index).lost = lost
            self.save()
