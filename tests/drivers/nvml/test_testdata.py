"""Optional: compare the simulator with real nvidia-smi transcripts in ../shared/testdata."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pynvml as N
import pytest

from tests.support.nvml import Sim, mig_spec

DATA = Path(__file__).resolve().parents[3] / "../shared/testdata/nvidia-smi"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared testdata not available")


def test_a100_40gb_lgip(sim: Sim) -> None:
    sim(mig_spec("A100-40GB"))
    h = N.nvmlDeviceGetHandleByIndex(0)
    rows = re.findall(
        r"\|\s+0\s+MIG (\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([\d.]+)\s+No\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\n\|\s+(\d+)\s+(\d+)\s+(\d+)",
        (DATA / "a100-40gb-mig-lgip.txt").read_text(),
    )
    assert len(rows) == 7
    for name, pid, free, total, gib, sm, dec, enc, ce, jpeg, ofa in rows:
        info = N.nvmlDeviceGetGpuInstanceProfileInfoById(h, int(pid))
        assert info.name == f"MIG {name}"
        assert info.instanceCount == int(total) == int(free)
        assert N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, int(pid)) == int(free)
        assert abs(info.memorySizeMB / 1024 - float(gib)) < 0.01
        got = (info.multiprocessorCount, info.decoderCount, info.encoderCount)
        assert got == (int(sm), int(dec), int(enc))
        assert (info.copyEngineCount, info.jpegCount, info.ofaCount) == (int(ce), int(jpeg), int(ofa))


def test_a30_lgipp(sim: Sim) -> None:
    sim(mig_spec("A30"))
    h = N.nvmlDeviceGetHandleByIndex(0)
    lines = re.findall(
        r"Profile ID\s+(\d+) Placements? ?: \{([\d,]+)\}:(\d+)", (DATA / "a30-mig-lgipp.txt").read_text()
    )
    assert len(lines) == 4
    for pid, starts, size in lines:
        count = ctypes.c_uint(0)
        N.nvmlDeviceGetGpuInstancePossiblePlacements(h, int(pid), None, ctypes.byref(count))
        arr = (N.c_nvmlGpuInstancePlacement_t * count.value)()
        N.nvmlDeviceGetGpuInstancePossiblePlacements(h, int(pid), arr, ctypes.byref(count))
        assert [(p.start, p.size) for p in arr] == [(int(s), int(size)) for s in starts.split(",")]
