"""The demo's stand-in for nccl-tests: a small program that prints the log an 8 x H100 NVLink all_reduce_perf run
would print, so the demo's NCCL validation has a curve to parse, judge and draw. It is simulated output (the
demo's hosts have no GPU), says so in its log, and the dashboard labels the curve as simulated.

``install(directory)`` writes ``all_reduce_perf`` (and friends) there; the demo points its agents'
``GPUFABRIC_NCCL_TESTS_DIR`` at it. The agent runs it exactly as it would run the real binary.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

BINARIES = ("all_reduce_perf", "all_gather_perf", "reduce_scatter_perf")

# Standard library only: the agent runs it as a separate program.
PROGRAM = r"""
import os, socket, sys

def size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
lo, hi, factor = size(args.get("-b", "8")), size(args.get("-e", "128M")), int(args.get("-f", "2"))
gpus = int(args.get("-g", "1"))
peak = 430.0  # GB/s the largest sizes approach: an NVLink 4 (H100 SXM) 8-GPU all_reduce
test = os.path.basename(sys.argv[0])
host = socket.gethostname()
print("# nccl-tests version 2.17.1 nccl-headers=22703 nccl-library=22703")
print("# gpufabric demo stand-in: SIMULATED output (no GPU on this host), not a measurement")
print(f"# Collective test starting: {test}")
print(f"# nThread 1 nGpus {gpus} minBytes {lo} maxBytes {hi} step: {factor}(factor) warmup iters: {args.get('-w', '5')} iters: {args.get('-n', '20')} agg iters: 1 validation: {args.get('-c', '1')} graph: 0")
print("#")
print("# Using devices")
for r in range(gpus):
    print(f"#  Rank {r:2d} Group  0 Pid  {4000 + r:5d} on {host:>10} device {r:2d} [0x{0x17 + r:02x}] NVIDIA H100 80GB HBM3")
print("#")
print("#                                                              out-of-place                       in-place          ")
print("#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong")
print("#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)       ")
bus_factor = 2 * (gpus - 1) / gpus if gpus > 1 else 0.0
sizes, s = [], lo
while s <= hi:
    sizes.append(s)
    s *= factor
total = 0.0
for s in sizes:
    busbw = peak * s / (s + (8 << 20)) if bus_factor else 0.0
    algbw = busbw / bus_factor if bus_factor else s / 20e3
    time_us = max(s / (algbw * 1e3), 12.0) if algbw else 12.0
    total += busbw
    line = f"{time_us:7.2f}  {algbw:6.2f}  {busbw:6.2f}  {0:5d}"
    print(f"{s:12d}  {max(s // 4, 0):12d}     float     sum      -1  {line}  {line}")
print("# Out of bounds values : 0 OK")
print(f"# Avg bus bandwidth    : {total / len(sizes):.4f} ")
print("#")
print(f"# Collective test concluded: {test}")
print("# gpufabric demo stand-in: SIMULATED output (no GPU on this host), not a measurement")
"""


def install(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in BINARIES:
        path = directory / name
        path.write_text(f"#!{sys.executable}\n{PROGRAM}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory
