"""Open NVML for a caller: the real driver library, or the simulator when a host spec is given.

Everything above this module calls the real ``pynvml`` API; whether ``pynvml.nvmlLib`` is the
driver's ``libnvidia-ml.so.1`` or the simulator is decided here and nowhere else.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

if TYPE_CHECKING:
    from drivers.nvml.sim.host import SimulatedHost


class NvmlUnavailable(RuntimeError):
    """NVML could not be loaded or initialised (no NVIDIA driver on this machine)."""


@contextmanager
def open_nvml(sim: str | Path | None = None, state: Path | None = None) -> Iterator[SimulatedHost | None]:
    """Initialise NVML for the duration of the block.

    ``sim`` is a host spec path or the name of a bundled spec; with it the simulator is installed
    as ``pynvml.nvmlLib`` and its host object is yielded (for out-of-band actions such as a GPU
    reset). Without it the real library is loaded and ``None`` is yielded.
    """
    host = None
    if sim is not None:
        from drivers.nvml.sim.install import install

        host = install(sim, state_path=state)
    try:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(
                f"NVML could not be loaded ({exc}). Is the NVIDIA driver installed? "
                "To try gpufabric without a GPU, pass --sim SPEC (a host spec file or a bundled "
                "name such as 'h100-8x'; see `gpufabric-agent sim list`)."
            ) from exc
        try:
            yield host
        finally:
            pynvml.nvmlShutdown()
    finally:
        if host is not None:
            from drivers.nvml.sim.install import uninstall

            uninstall()
