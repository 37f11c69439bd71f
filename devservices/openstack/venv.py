"""The OpenStack services' virtualenv (built once, stamped by its pin list) and the errors of this package.

Part of ``devservices.openstack`` (see its docstring). Standard library only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Exact pins: the services are test fixtures, so upgrades are deliberate (and change the stamp -> rebuild).
PINS: tuple[str, ...] = (
    "openstack-placement==16.0.0",
    "ironic==39.0.0",
    "keystone==30.0.0",
    "openstacksdk==4.22.0",
)
VENV_ENV = "GPUFABRIC_OPENSTACK_VENV"
DEFAULT_VENV = REPO_ROOT / ".cache" / "venv-openstack"

# pip's messages when the package index cannot be reached (as opposed to a real resolution or build error).
_OFFLINE_MARKERS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
    "No route to host",
    "ProxyError",
    "SSLError",
)


class ServiceError(RuntimeError):
    """A service could not be built, started or stopped; the message carries the relevant log tail."""


class VenvBuildError(ServiceError):
    """pip could not build the services virtualenv. ``offline`` is True when the package index was unreachable."""

    def __init__(self, message: str, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


def venv_path() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV).resolve()


def _stamp_name(pins: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest()[:16]
    return f".gpufabric-openstack-{digest}"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _stamped(pins: tuple[str, ...], local: tuple[Path, ...]) -> tuple[str, ...]:
    return pins + tuple(f"--no-deps --editable {p}" for p in local)


def venv_ready(venv: Path | None = None, pins: tuple[str, ...] = PINS, local: tuple[Path, ...] = ()) -> bool:
    venv = venv or venv_path()
    return (venv / _stamp_name(_stamped(pins, local))).is_file() and (venv / "bin" / "python").exists()


def create_venv(
    venv: Path | None = None,
    pins: tuple[str, ...] = PINS,
    python: str | None = None,
    quiet: bool = True,
    local: tuple[Path, ...] = (),
) -> Path:
    """Build (once) the services virtualenv and return its path. Safe to call from several processes at once.

    Idempotent: a stamp file named after the pin list marks a finished build; a changed pin list rebuilds. An
    exclusive ``flock`` on ``<venv>.lock`` serialises concurrent callers (pytest-xdist workers): the second waits
    and then finds the stamp. If the build failed while a caller waited, it gets the same error without another
    pip run. ``local`` projects are then installed editable without their dependencies (this repository, for the
    Cyborg agent driver's entry point).
    """
    venv = venv or venv_path()
    stamp = venv / _stamp_name(_stamped(pins, local))
    if stamp.is_file():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.with_name(venv.name + ".lock")
    failure_path = venv.with_name(venv.name + ".failed.json")
    waited_since = time.time()
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.is_file():
                return venv
            if failure_path.is_file():
                failure = json.loads(failure_path.read_text())
                if failure.get("stamp") == stamp.name and failure.get("time", 0) >= waited_since:
                    raise VenvBuildError(failure["message"], offline=bool(failure.get("offline")))
            _build_venv(venv, pins, python or _base_python(), quiet, failure_path, stamp, local)
            return venv
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _base_python() -> str:
    # A venv made from inside another venv would point at that venv's interpreter; use the real one.
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.environ.get("GPUFABRIC_OPENSTACK_PYTHON") or base


def _build_venv(
    venv: Path,
    pins: tuple[str, ...],
    python: str,
    quiet: bool,
    failure_path: Path,
    stamp: Path,
    local: tuple[Path, ...] = (),
) -> None:
    t0 = time.monotonic()
    log_path = venv.with_name(venv.name + ".pip.log")
    if not (venv / "bin" / "python").exists():
        proc = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise VenvBuildError(f"`{python} -m venv {venv}` failed:\n{_tail(proc.stderr)}", offline=False)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    cmd = [*pip, *pins]
    if not quiet:
        print(f"building {venv}: pip install {' '.join(pins)}", file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        for project in local if proc.returncode == 0 else ():
            cmd = [*pip, "--no-deps", "--editable", str(project)]
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                break
    output = log_path.read_text()
    if proc.returncode != 0:
        offline = any(m in output for m in _OFFLINE_MARKERS)
        why = "the package index could not be reached (no network?)" if offline else "pip failed"
        message = (
            f"could not build the OpenStack services virtualenv {venv}: {why}.\n"
            f"command: {' '.join(cmd)}\nfull log: {log_path}\n--- last lines ---\n{_tail(output)}"
        )
        failure_path.write_text(
            json.dumps({"stamp": stamp.name, "time": time.time(), "offline": offline, "message": message})
        )
        raise VenvBuildError(message, offline=offline)
    for old in venv.glob(".gpufabric-openstack-*"):
        old.unlink()
    stamp.write_text(
        json.dumps({"pins": list(pins), "seconds": round(time.monotonic() - t0, 1), "python": python}) + "\n"
    )
    failure_path.unlink(missing_ok=True)
    if not quiet:
        print(f"built {venv} in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def _check_venv(venv: Path) -> None:
    if not venv_ready(venv):
        raise ServiceError(
            f"the OpenStack services virtualenv {venv} is not built: run `scripts/openstack-services create-venv`"
        )
