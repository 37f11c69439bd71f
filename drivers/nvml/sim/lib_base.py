"""Shared machinery of the simulated library: the API decorator and handle resolution."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from drivers.gpus.catalog import CiProfile, MigProfile, Product
from drivers.nvml.sim import handles as H
from drivers.nvml.sim.codes import (
    GPU_IS_LOST,
    INSUFFICIENT_SIZE,
    INVALID_ARGUMENT,
    MIG_ENABLE,
    NO_PERMISSION,
    NOT_SUPPORTED,
    SUCCESS,
    UNINITIALIZED,
    NvmlFail,
)
from drivers.nvml.sim.state import CiState, GiState, GpuState

if TYPE_CHECKING:
    from drivers.nvml.sim.host import SimulatedHost
    from drivers.nvml.sim.hostspec import GpuSpec

F = TypeVar("F", bound=Callable[..., Any])


def api(mutating: bool = False, needs_init: bool = True) -> Callable[[F], F]:
    """Wrap a C-symbol method: init check, crash hook, root check, NvmlFail -> return code."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: LibBase, *args: Any) -> int:
            with self.host.lock:
                if needs_init and self.init_count == 0:
                    return UNINITIALIZED
                if mutating:
                    self.host.before_mutation()
                    if not self.host.spec.root:
                        return NO_PERMISSION
                try:
                    ret = fn(self, *args)
                except NvmlFail as exc:
                    return exc.code
                return SUCCESS if ret is None else int(ret)

        return wrapper  # type: ignore[return-value]

    return deco


@dataclass
class Target:
    """What a device handle refers to: a GPU, or a MIG device (GI + CI) on it."""

    spec: GpuSpec
    state: GpuState
    gi: GiState | None = None
    ci: CiState | None = None

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def product(self) -> Product:
        return self.spec.product

    @property
    def is_mig(self) -> bool:
        return self.gi is not None

    def gi_profile(self) -> MigProfile:
        assert self.gi is not None
        prof = self.product.profile_by_id(self.gi.profile_id)
        assert prof is not None
        return prof

    def ci_profile(self) -> CiProfile:
        assert self.ci is not None
        gp = self.gi_profile()
        return next(c for c in self.product.ci_profiles_for(gp) if c.index == self.ci.profile_id)


class LibBase:
    def __init__(self, host: SimulatedHost) -> None:
        self.host = host
        self.init_count = 0

    # ---- handle resolution ----
    def _gpu(self, index: int, allow_lost: bool = False) -> Target:
        if not 0 <= index < len(self.host.gpus):
            raise NvmlFail(INVALID_ARGUMENT)
        st = self.host.state.gpus[index]
        if st.lost and not allow_lost:
            raise NvmlFail(GPU_IS_LOST)
        return Target(self.host.gpus[index], st)

    def _dev(self, handle: Any, allow_mig: bool = True) -> Target:
        h = H.decode(handle, H.GPU, H.MIG)
        t = self._gpu(h.gpu)
        if h.kind == H.MIG:
            if not allow_mig or t.state.mig_current != MIG_ENABLE:
                raise NvmlFail(INVALID_ARGUMENT)
            gi = t.state.gi(h.gi)
            ci = next((c for c in gi.cis if c.id == h.ci), None) if gi else None
            if gi is None or ci is None:
                raise NvmlFail(INVALID_ARGUMENT)
            t.gi, t.ci = gi, ci
        return t

    def _parent(self, handle: Any) -> Target:
        return self._dev(handle, allow_mig=False)

    def _mig_parent(self, handle: Any) -> Target:
        """A MIG-capable parent GPU with MIG enabled."""
        t = self._parent(handle)
        if not t.product.mig_capable or t.state.mig_current != MIG_ENABLE:
            raise NvmlFail(NOT_SUPPORTED)
        return t

    def _gi(self, handle: Any) -> tuple[Target, GiState, MigProfile]:
        h = H.decode(handle, H.GI)
        t = self._gpu(h.gpu)
        if t.state.mig_current != MIG_ENABLE:
            raise NvmlFail(INVALID_ARGUMENT)
        gi = t.state.gi(h.gi)
        if gi is None:
            raise NvmlFail(INVALID_ARGUMENT)
        prof = t.product.profile_by_id(gi.profile_id)
        assert prof is not None
        return t, gi, prof

    @staticmethod
    def gpu_handle(index: int) -> int:
        return H.Handle(H.GPU, index).encode()

    @staticmethod
    def mig_handle(index: int, gi: int, ci: int) -> int:
        return H.Handle(H.MIG, index, gi, ci).encode()

    @staticmethod
    def gi_handle(index: int, gi: int) -> int:
        return H.Handle(H.GI, index, gi).encode()

    @staticmethod
    def ci_handle(index: int, gi: int, ci: int) -> int:
        return H.Handle(H.CI, index, gi, ci).encode()

    @staticmethod
    def _write_str(buf: Any, length: Any, text: str) -> None:
        data = text.encode()
        if len(data) + 1 > H.as_int(length):
            raise NvmlFail(INSUFFICIENT_SIZE)
        H.target(buf).value = data

    @staticmethod
    def _count_protocol(count_ref: Any, array: Any, n: int) -> bool:
        """NULL-array sizing protocol. Returns True when the caller's array should be filled."""
        if H.is_null(array):
            H.set_value(count_ref, n)
            if n:
                raise NvmlFail(INSUFFICIENT_SIZE)
            return False
        if H.as_int(count_ref) < n:
            H.set_value(count_ref, n)
            raise NvmlFail(INSUFFICIENT_SIZE)
        H.set_value(count_ref, n)
        return True
