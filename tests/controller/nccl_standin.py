"""Stand-in nccl-tests binaries for tests: small scripts that print a realistic nccl-tests log.

``install_standins(directory)`` writes ``all_reduce_perf`` (and friends) and a stand-in ``mpirun`` into a
directory; point ``GPUFABRIC_NCCL_TESTS_DIR`` / ``GPUFABRIC_MPIRUN`` at them. Behaviour comes from the
environment of the process that runs them (the agent):

- ``STANDIN_PEAK_BUSBW``: busbw (GB/s) the large sizes approach (default 420).
- ``STANDIN_WRONG``: #wrong printed on the largest row (default 0).
- ``STANDIN_RECORD``: mpirun appends its argv and the hostfile there (JSON lines).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

BINARY = r"""
import os, socket, sys

def size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
lo, hi, factor = size(args.get("-b", "8")), size(args.get("-e", "128M")), int(args.get("-f", "2"))
gpus = int(args.get("-g", "1"))
ranks = int(os.environ.get("STANDIN_RANKS", "0")) or gpus
peak = float(os.environ.get("STANDIN_PEAK_BUSBW", "420"))
wrong_last = int(os.environ.get("STANDIN_WRONG", "0"))
test = os.path.basename(sys.argv[0])
host = socket.gethostname()
print("# nccl-tests version 2.17.1 nccl-headers=22703 nccl-library=22703")
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
factor_bus = 2 * (ranks - 1) / ranks if ranks > 1 else 0.0
sizes, s = [], lo
while s <= hi:
    sizes.append(s)
    s *= factor
total = 0.0
for s in sizes:
    busbw = peak * s / (s + (4 << 20)) if factor_bus else 0.0
    algbw = busbw / factor_bus if factor_bus else s / 20e3
    time_us = max(s / (algbw * 1e3), 10.0) if algbw else 10.0
    wrong = wrong_last if s == sizes[-1] else 0
    total += busbw
    count = s // 4
    print(f"{s:12d}  {count:12d}     float     sum      -1  {time_us:7.2f}  {algbw:6.2f}  {busbw:6.2f}  {wrong:5d}  {time_us:7.2f}  {algbw:6.2f}  {busbw:6.2f}  {wrong:5d}")
oob = sum(2 for s in sizes if wrong_last and s == sizes[-1])
print(f"# Out of bounds values : {oob} {'OK' if not oob else 'FAILED'}")
print(f"# Avg bus bandwidth    : {total / len(sizes):.4f} ")
print("#")
print(f"# Collective test concluded: {test}")
sys.exit(1 if oob else 0)
"""

MPIRUN = r"""
import json, os, subprocess, sys

argv = sys.argv[1:]
hostfile = argv[argv.index("--hostfile") + 1]
np_ = int(argv[argv.index("-np") + 1])
record = os.environ.get("STANDIN_RECORD")
if record:
    with open(record, "a") as fh:
        fh.write(json.dumps({"argv": sys.argv, "hostfile": open(hostfile).read()}) + "\n")
# The binary follows the mpirun options: the first argument ending in _perf.
i = next(k for k, a in enumerate(argv) if a.endswith("_perf"))
env = dict(os.environ, STANDIN_RANKS=str(np_))
out = subprocess.run([sys.executable, argv[i], *argv[i + 1:]], capture_output=True, text=True, env=env)
for line in out.stdout.splitlines():
    print(f"[1,0]<stdout>:{line}")
sys.exit(out.returncode)
"""


def _write(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def install_standins(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("all_reduce_perf", "all_gather_perf", "reduce_scatter_perf", "sendrecv_perf"):
        _write(directory / name, BINARY)
    _write(directory / "mpirun", MPIRUN)
    return directory


def standin_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("STANDIN_")}
