"""The demo's stand-in for nccl-tests: a small program that prints the log an 8 x H100 NVLink all_reduce_perf run
would print, so the demo's NCCL validation has a curve to parse, judge and draw. It is simulated output (the
demo's hosts have no GPU), says so in its log, and the dashboard labels the curve as simulated.

``install(directory)`` writes ``all_reduce_perf`` (and friends) there; the demo points its agents'
``GPUFABRIC_NCCL_TESTS_DIR`` at it. The agent runs it exactly as it would run the real binary. The tests use the
same program with other ``STANDIN_*`` values (``tests/support/nccl_standin.py``: a peak, a corrupting link,
the ranks a stand-in ``mpirun`` starts).
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

BINARIES = ("all_reduce_perf", "all_gather_perf", "reduce_scatter_perf")

# Standard library only: the agent runs it as a separate program.
PROGRAM = r"""
import os, socket, sys
# {defaults}

def size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
lo, hi, factor = size(args.get("-b", "8")), size(args.get("-e", "128M")), int(args.get("-f", "2"))
gpus = int(args.get("-g", "1"))
ranks = int(os.environ.get("STANDIN_RANKS", "0")) or gpus  # set by a stand-in mpirun: one rank per GPU of all hosts
peak = float(os.environ.get("STANDIN_PEAK_BUSBW", "430"))  # GB/s the largest sizes approach (NVLink 4, 8 x H100)
knee = int(float(os.environ.get("STANDIN_KNEE_MIB", "8")) * (1 << 20))  # size at half the peak
floor_us = float(os.environ.get("STANDIN_MIN_US", "12"))  # the latency of the smallest sizes
wrong_last = int(os.environ.get("STANDIN_WRONG", "0"))  # #wrong on the largest size (a corrupting link)
banner = os.environ.get("STANDIN_BANNER", "1") == "1"
test = os.path.basename(sys.argv[0])
host = socket.gethostname()
print("# nccl-tests version 2.17.1 nccl-headers=22703 nccl-library=22703")
if banner:
    print("# gpufabric demo stand-in: SIMULATED output (no GPU on this host), not a measurement")
print(f"# Collective test starting: {test}")
print(f"# nThread 1 nGpus {gpus} minBytes {lo} maxBytes {hi} step: {factor}(factor) warmup iters: {args.get('-w', '5')} iters: {args.get('-n', '20')} agg iters: 1 validation: {args.get('-c', '1')} graph: 0")
print("#")
print("# Using devices")
for r in range(ranks):
    print(f"#  Rank {r:2d} Group  0 Pid  {4000 + r:5d} on {host:>10} device {r % 8:2d} [0x{0x17 + r:02x}] NVIDIA H100 80GB HBM3")
print("#")
print("#                                                              out-of-place                       in-place          ")
print("#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong")
print("#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)       ")
bus_factor = 2 * (ranks - 1) / ranks if ranks > 1 else 0.0
sizes, s = [], lo
while s <= hi:
    sizes.append(s)
    s *= factor
total = 0.0
for s in sizes:
    busbw = peak * s / (s + knee) if bus_factor else 0.0
    algbw = busbw / bus_factor if bus_factor else s / 20e3
    time_us = max(s / (algbw * 1e3), floor_us) if algbw else floor_us
    wrong = wrong_last if s == sizes[-1] else 0
    total += busbw
    line = f"{time_us:7.2f}  {algbw:6.2f}  {busbw:6.2f}  {wrong:5d}"
    print(f"{s:12d}  {s // 4:12d}     float     sum      -1  {line}  {line}")
oob = sum(2 for s in sizes if wrong_last and s == sizes[-1])
print(f"# Out of bounds values : {oob} {'OK' if not oob else 'FAILED'}")
print(f"# Avg bus bandwidth    : {total / len(sizes):.4f} ")
print("#")
print(f"# Collective test concluded: {test}")
if banner:
    print("# gpufabric demo stand-in: SIMULATED output (no GPU on this host), not a measurement")
sys.exit(1 if oob else 0)
"""


def install(directory: Path, binaries: tuple[str, ...] = BINARIES, defaults: dict[str, str] | None = None) -> Path:
    """Write the stand-in as each of ``binaries`` in ``directory``; ``defaults`` are ``STANDIN_*`` values it uses
    unless the environment it runs in sets them (tests: another peak, no banner)."""
    directory.mkdir(parents=True, exist_ok=True)
    preset = "\n".join(f"os.environ.setdefault({k!r}, {v!r})" for k, v in (defaults or {}).items())
    body = PROGRAM.replace("# {defaults}", preset, 1)
    for name in binaries:
        write_program(directory / name, body)
    return directory


def write_program(path: Path, body: str) -> Path:
    """An executable Python program run by this interpreter (standard library only)."""
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
