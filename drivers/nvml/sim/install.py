"""Install the simulator as ``pynvml.nvmlLib`` (and take it out again)."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

from drivers.nvml.sim.host import SimulatedHost
from drivers.nvml.sim.hostspec import HostSpec, HostSpecError, load_host_spec
from drivers.nvml.sim.state import default_state_path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml


def bundled_specs() -> dict[str, Path]:
    """Bundled host specs by name (``drivers/nvml/specs/<name>.yaml``)."""
    root = resources.files("drivers.nvml").joinpath("specs")
    out: dict[str, Path] = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name.removesuffix(".yaml")] = Path(str(entry))
    return dict(sorted(out.items()))


def _resolve(spec: str | Path | HostSpec, state_path: Path | None) -> tuple[HostSpec, Path | None, str]:
    if isinstance(spec, HostSpec):
        return spec, state_path, "<HostSpec>"
    path = Path(spec)
    bundled_name: str | None = None
    if not path.exists():
        specs = bundled_specs()
        if isinstance(spec, Path) or str(spec) not in specs:
            raise HostSpecError(
                f"host spec {str(spec)!r} is neither a file nor a bundled spec; bundled: {', '.join(specs)}"
            )
        bundled_name, path = str(spec), specs[str(spec)]
    loaded = load_host_spec(path)
    return loaded, state_path or default_state_path(path, bundled_name), str(path)


def install(spec: str | Path | HostSpec, state_path: Path | None = None) -> SimulatedHost:
    """Build the simulated host and make pynvml use it. Call ``pynvml.nvmlInit()`` afterwards.

    A HostSpec object without ``state_path`` keeps its state in memory only.
    """
    host_spec, path, source = _resolve(spec, state_path)
    host = SimulatedHost(host_spec, state_path=path, source=source)
    pynvml.nvmlLib = host.library
    pynvml._nvmlGetFunctionPointer_cache.clear()
    pynvml._nvmlLib_refcount = 0
    return host


def uninstall() -> None:
    """Forget the simulator: the next ``nvmlInit`` loads the real library again."""
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()
    pynvml._nvmlLib_refcount = 0
