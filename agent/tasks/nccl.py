"""The ``nccl-test`` task: run an nccl-tests binary (alone, or across hosts with mpirun) and upload its log.

The agent does not judge: it returns the log text and the exit code, and the controller parses and
judges it (``drivers.nccl``), so every verdict is made by the same code whatever ran the test.

Task params (all optional but ``test``):

- ``test``: the binary name (``all_reduce_perf``, ``all_gather_perf``, ...); ``binary`` an explicit path.
- ``tests_dir``: where the binaries live; default ``$GPUFABRIC_NCCL_TESTS_DIR``, else ``/opt/nccl-tests/build``.
- ``min_bytes``, ``max_bytes``, ``step_factor``, ``iters``, ``warmup_iters``, ``gpus``: ``-b -e -f -n -w -g``;
  ``-c 1`` (check results) is always passed so corrupted data shows up in ``#wrong``.
- ``hosts`` (multi-node): the hosts under test; this agent writes a hostfile and launches ``mpirun``
  (``mpirun`` path from the param, ``$GPUFABRIC_MPIRUN`` or ``mpirun``; ``mpirun_args`` appended) with
  ``--tag-output``, one rank per GPU (``slots=<gpus_per_node>``).
- ``timeout_s``: kill the run after this long (default 1800).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from drivers.contract.protocol import Task, TaskResult

TESTS_DIR_ENV = "GPUFABRIC_NCCL_TESTS_DIR"
MPIRUN_ENV = "GPUFABRIC_MPIRUN"
DEFAULT_TESTS_DIR = "/opt/nccl-tests/build"
DEFAULT_TIMEOUT_S = 1800.0
# The controller stores the log; keep the upload bounded (a full 8 B..16 GB table is ~10 KB, NCCL INFO
# debug output can be megabytes — keep its tail, where the table and the failure are).
MAX_LOG_CHARS = 2_000_000
_BINARY = re.compile(r"^[a-z0-9_]+_perf$")
_SIZE = re.compile(r"^\d+[KMGkmg]?$")


class NcclTaskError(ValueError):
    """The task's params cannot make a command line."""


def _size(params: dict[str, Any], key: str, default: str) -> str:
    value = str(params.get(key, default))
    if not _SIZE.match(value):
        raise NcclTaskError(f"{key} {value!r} is not a size like 8, 512K, 128M or 8G")
    return value


def _int(params: dict[str, Any], key: str, default: int, minimum: int) -> int:
    try:
        value = int(params.get(key, default))
    except (TypeError, ValueError):
        raise NcclTaskError(f"{key} must be an integer") from None
    if value < minimum:
        raise NcclTaskError(f"{key} must be at least {minimum}")
    return value


def binary_path(params: dict[str, Any]) -> str:
    if params.get("binary"):
        return str(params["binary"])
    test = str(params.get("test", "all_reduce_perf"))
    if not _BINARY.match(test):
        raise NcclTaskError(f"test {test!r} is not an nccl-tests binary name (like all_reduce_perf)")
    tests_dir = params.get("tests_dir") or os.environ.get(TESTS_DIR_ENV) or DEFAULT_TESTS_DIR
    return str(Path(str(tests_dir)) / test)


def test_args(params: dict[str, Any], gpus: int) -> list[str]:
    return [
        "-b",
        _size(params, "min_bytes", "8"),
        "-e",
        _size(params, "max_bytes", "128M"),
        "-f",
        str(_int(params, "step_factor", 2, 2)),
        "-g",
        str(gpus),
        "-n",
        str(_int(params, "iters", 20, 1)),
        "-w",
        str(_int(params, "warmup_iters", 5, 0)),
        "-c",
        "1",
    ]


def write_hostfile(hosts: list[str], slots: int, directory: Path) -> Path:
    path = directory / "hostfile"
    path.write_text("".join(f"{h} slots={slots}\n" for h in hosts))
    return path


def build_command(params: dict[str, Any], workdir: Path) -> list[str]:
    """The argv to run: the binary alone (one process driving every GPU), or mpirun over the hosts."""
    hosts = [str(h) for h in params.get("hosts") or []]
    gpus_per_node = _int(params, "gpus_per_node", 1, 1) if params.get("gpus_per_node") is not None else None
    binary = binary_path(params)
    if len(hosts) <= 1:
        # Single node: one process, -g = every GPU of the node.
        return [binary, *test_args(params, gpus_per_node or _local_gpu_count())]
    slots = gpus_per_node or _local_gpu_count()
    hostfile = write_hostfile(hosts, slots, workdir)
    mpirun = str(params.get("mpirun") or os.environ.get(MPIRUN_ENV) or "mpirun")
    extra = params.get("mpirun_args") or []
    if isinstance(extra, str):
        extra = shlex.split(extra)
    return [
        mpirun,
        "--hostfile",
        str(hostfile),
        "-np",
        str(len(hosts) * slots),
        "-N",
        str(slots),
        "--tag-output",
        "--bind-to",
        "none",
        *[str(a) for a in extra],
        binary,
        *test_args(params, 1),
    ]


def _local_gpu_count() -> int:
    """GPUs NVML sees (the simulator included); 1 when it cannot tell."""
    try:
        import pynvml

        return max(1, int(pynvml.nvmlDeviceGetCount()))
    except Exception:
        return 1


def run_nccl_test(task: Task) -> TaskResult:
    params = dict(task.params)
    timeout_s = float(params.get("timeout_s", DEFAULT_TIMEOUT_S))
    with tempfile.TemporaryDirectory(prefix="gpufabric-nccl-") as tmp:
        try:
            argv = build_command(params, Path(tmp))
        except NcclTaskError as exc:
            return TaskResult(status="failed", message=str(exc), output={"error": str(exc)})
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=tmp)
        except FileNotFoundError:
            message = f"{argv[0]} not found (set {TESTS_DIR_ENV} or the task's tests_dir/binary)"
            return TaskResult(status="failed", message=message, output={"command": argv, "error": message})
        except subprocess.TimeoutExpired as exc:
            log = _text(exc.stdout) + _text(exc.stderr)
            message = f"timed out after {timeout_s:.0f}s"
            return TaskResult(
                status="failed",
                message=message,
                output={"command": argv, "log": _tail(log), "exit_code": None, "error": message, "timed_out": True},
            )
    log = proc.stdout + (("\n" + proc.stderr) if proc.stderr else "")
    output = {
        "command": argv,
        "log": _tail(log),
        "exit_code": proc.returncode,
        "duration_s": round(time.monotonic() - started, 3),
    }
    # A non-zero exit is still a result worth judging (nccl-tests exits 1 on #wrong): the controller decides.
    status = "succeeded" if proc.returncode == 0 else "failed"
    return TaskResult(status=status, message=f"exit code {proc.returncode}", output=output)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _tail(text: str) -> str:
    return text if len(text) <= MAX_LOG_CHARS else text[-MAX_LOG_CHARS:]
