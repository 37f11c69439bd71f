"""The simulated ``libnvidia-ml``: an object whose attributes are the C symbols pynvml resolves.

Every symbol takes the ctypes arguments pynvml builds and returns an ``nvmlReturn_t`` int; symbols
that are not implemented are simply absent, so pynvml raises ``NVMLError_FunctionNotFound``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.nvml.sim.codes import ERROR_STRINGS
from drivers.nvml.sim.lib_device import DeviceApi
from drivers.nvml.sim.lib_health import HealthApi
from drivers.nvml.sim.lib_mig import MigApi
from drivers.nvml.sim.lib_topo import TopoApi

if TYPE_CHECKING:
    from drivers.nvml.sim.host import SimulatedHost


def _make_error_string() -> Any:
    def nvmlErrorString(code: Any) -> bytes:
        value = int(getattr(code, "value", code))
        return ERROR_STRINGS.get(value, "Unknown Error").encode()

    return nvmlErrorString


class SimulatedNvml(DeviceApi, MigApi, HealthApi, TopoApi):
    """One instance per SimulatedHost; install it as ``pynvml.nvmlLib``."""

    def __init__(self, host: SimulatedHost) -> None:
        super().__init__(host)
        # a plain function object: pynvml sets ``.restype`` on it
        self.nvmlErrorString = _make_error_string()
