"""Generic service process management: spawn in a process group, wait until ready, pid files, stop.

Part of ``devservices.openstack`` (see its docstring). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devservices.openstack.venv import ServiceError, _tail

WSGI_SERVE = Path(__file__).resolve().parents[1] / "wsgi_serve.py"
SERVICES = ("placement", "ironic", "keystone")  # keystone: devservices/keystone.py


@dataclass
class Service:
    """A running service: its URL, process group and where its logs are."""

    name: str
    url: str
    pid: int
    base: Path
    logs: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    started_in_s: float = 0.0

    def log_tail(self, lines: int = 60) -> str:
        return _logs_tail(self.logs, lines)


def _logs_tail(logs: list[Path], lines: int = 60) -> str:
    parts = []
    for p in logs:
        if p.is_file():
            parts.append(f"--- {p} (last {lines} lines) ---\n{_tail(p.read_text(errors='replace'), lines)}")
    return "\n".join(parts) or "(no logs)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _run_checked(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise ServiceError(f"{what} failed (exit {proc.returncode}):\n{_logs_tail([log])}")


def _spawn(cmd: list[str], env: dict[str, str], out_log: Path) -> subprocess.Popen[bytes]:
    with open(out_log, "ab") as out:
        # A session of its own: stop() signals the whole group (Ironic forks an API worker).
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def _wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    url_of: Callable[[], str | None],
    logs: list[Path],
    timeout: float,
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode} while starting:\n{_logs_tail(logs)}")
        url = url_of()
        if url is not None and _http_ok(url + "/"):
            return url
        time.sleep(0.05)
    _kill_group(proc.pid)
    raise ServiceError(f"{name} did not answer within {timeout:.0f} s:\n{_logs_tail(logs)}")


def _service_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


def _write_pidfile(base: Path, name: str, pid: int, url: str) -> None:
    (base / f"{name}.pid").write_text(f"{pid}\n")
    (base / f"{name}.url").write_text(f"{url}\n")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group, wait for all of it, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pgid)
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(100):
        _reap(pgid)
        if not _group_alive(pgid):
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # If we are the parent, collect the zombie (a zombie still counts as a group member for killpg).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(base: Path, names: tuple[str, ...] = SERVICES) -> list[str]:
    """Stop the services whose pid files are in ``base``; returns the names stopped."""
    stopped = []
    for name in names:
        pidfile = base / f"{name}.pid"
        if not pidfile.is_file():
            continue
        pid = int(pidfile.read_text().split()[0])
        if _group_alive(pid):
            _kill_group(pid)
            stopped.append(name)
        pidfile.unlink(missing_ok=True)
        (base / f"{name}.url").unlink(missing_ok=True)
    return stopped


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    """Stop ``service`` (its whole process group) when the block ends."""
    try:
        yield service
    finally:
        _kill_group(service.pid)
        if service.process is not None:
            with contextlib.suppress(Exception):
                service.process.wait(timeout=5)
        (service.base / f"{service.name}.pid").unlink(missing_ok=True)


def _wait_listening(name: str, proc: subprocess.Popen[bytes], out_log: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode}:\n{_logs_tail([out_log])}")
        for line in out_log.read_text(errors="replace").splitlines():
            if line.startswith("LISTENING "):
                return int(line.split()[1])
        time.sleep(0.05)
    raise ServiceError(f"{name} did not start listening within {timeout:.0f} s:\n{_logs_tail([out_log])}")


def _http_json(url: str, headers: dict[str, str]) -> Any:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
