"""The simulator's stand-ins for the device nodes the NVIDIA driver creates, so device access can be enforced and
tested without a GPU and without root.

Under a *dev root* (``/dev`` on a real host) the driver provides ``nvidiactl`` and ``nvidia<minor>`` per GPU and,
for MIG, ``nvidia-caps/nvidia-cap<N>``: one capability node per GPU instance (its ``access`` file) and per compute
instance, where ``N`` is what ``/proc/driver/nvidia-caps/mig-minors`` lists for ``gpu<minor>/gi<id>/access`` and
``gpu<minor>/gi<id>/ci<id>/access`` (plus ``config`` and ``monitor``, the capabilities to change and watch MIG
layouts). The driver lists every possible GPU, GPU instance and compute instance in ``mig-minors``; the capability
nodes appear when used (``nvidia-modprobe -f``). The simulator does the same with regular files: every GPU's node,
a capability node for each GPU and compute instance that exists, and the full ``mig-minors`` list. A node it
creates gets ``mode`` (the driver's default, ``NVreg_DeviceFileMode``, is 0666); an existing one is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.nvml.sim.host import SimulatedHost

# The driver's layout: config and monitor first, then per GPU minor 15 GPU instance ids, each with its own access
# capability followed by those of its 8 compute instance ids.
MAX_GPUS = 32
GI_IDS = 15
CI_IDS = 8
DEFAULT_NODE_MODE = 0o666


def mig_minor(gpu_minor: int, gi: int, ci: int | None = None) -> int:
    """The capability minor of a GPU instance (``ci`` None) or of one of its compute instances."""
    base = 3 + (gpu_minor * GI_IDS + gi) * (1 + CI_IDS)
    return base if ci is None else base + 1 + ci


def mig_minors_text(gpus: int = MAX_GPUS) -> str:
    lines = ["config 1", "monitor 2"]
    for g in range(gpus):
        for gi in range(GI_IDS):
            lines.append(f"gpu{g}/gi{gi}/access {mig_minor(g, gi)}")
            lines.extend(f"gpu{g}/gi{gi}/ci{ci}/access {mig_minor(g, gi, ci)}" for ci in range(CI_IDS))
    return "\n".join(lines) + "\n"


def _create(path: Path, mode: int) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, mode)
    except FileExistsError:
        return
    os.fchmod(fd, mode)  # not narrowed by the umask, as the driver's mknod is not
    os.close(fd)


def materialize(host: SimulatedHost, dev_root: Path, mig_minors_file: Path, mode: int = DEFAULT_NODE_MODE) -> None:
    """Create the device nodes of ``host``'s GPUs and existing MIG instances under ``dev_root`` (those missing)
    and write ``mig_minors_file``."""
    dev_root.mkdir(parents=True, exist_ok=True)
    caps = dev_root / "nvidia-caps"
    caps.mkdir(exist_ok=True)
    _create(dev_root / "nvidiactl", mode)
    with host.lock:
        gpus = [
            (index, [(gi.id, [ci.id for ci in gi.cis]) for gi in gpu.gis]) for index, gpu in enumerate(host.state.gpus)
        ]
    for minor, instances in gpus:  # the simulator's minor number is the GPU's index
        _create(dev_root / f"nvidia{minor}", mode)
        for gi, cis in instances:
            _create(caps / f"nvidia-cap{mig_minor(minor, gi)}", mode)
            for ci in cis:
                _create(caps / f"nvidia-cap{mig_minor(minor, gi, ci)}", mode)
    if not mig_minors_file.is_file():
        mig_minors_file.parent.mkdir(parents=True, exist_ok=True)
        mig_minors_file.write_text(mig_minors_text(max(len(gpus), 1)))
