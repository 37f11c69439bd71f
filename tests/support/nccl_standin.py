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
from pathlib import Path

from controller.demo.nccl_standin import BINARIES, install, write_program

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


# What the tests' curves were drawn with (the demo's program, other values; a run's environment still wins).
TEST_DEFAULTS = {"STANDIN_PEAK_BUSBW": "420", "STANDIN_KNEE_MIB": "4", "STANDIN_MIN_US": "10", "STANDIN_BANNER": "0"}


def install_standins(directory: Path) -> Path:
    install(directory, (*BINARIES, "sendrecv_perf"), TEST_DEFAULTS)
    write_program(directory / "mpirun", MPIRUN)
    return directory


def standin_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("STANDIN_")}
