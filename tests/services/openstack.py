"""Run real OpenStack Placement and Ironic as local processes, from their own virtualenv.

The services' dependencies (oslo.*, eventlet, their own SQLAlchemy pins...) must not mix with the project's, so
they live in a separate virtualenv (``create_venv``; default ``.cache/venv-openstack``, or
``$GPUFABRIC_OPENSTACK_VENV``) with exact pins. Each service runs in a base directory of its own: config, sqlite
database, logs, a pid file and a url file. Both listen on a free loopback port.

- Placement 16.0.0 has no ``placement-api`` console script: its WSGI module runs under ``wsgi_serve.py`` (stdlib
  threads), ``auth_strategy = noauth2`` (send ``X-Auth-Token: admin``), sqlite.
- Ironic 39.0.0 runs as one ``ironic`` process (API + conductor, ``rpc_transport = none``; it forks one API worker),
  fake-hardware, ``auth_strategy = noauth``, sqlite, ``automated_clean = false``.

Used three ways: the CLI (``scripts/openstack-services`` -> ``main``), the pytest fixtures (``placement_service`` /
``ironic_service`` context managers) and the benchmarks. Standard library only, so any Python 3.11 can run it.
See docs/testing.md, "Real OpenStack services".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WSGI_SERVE = Path(__file__).resolve().with_name("wsgi_serve.py")

# Exact pins: the services are test fixtures, so upgrades are deliberate (and change the stamp -> rebuild).
PINS: tuple[str, ...] = ("openstack-placement==16.0.0", "ironic==39.0.0", "openstacksdk==4.22.0")
VENV_ENV = "GPUFABRIC_OPENSTACK_VENV"
DEFAULT_VENV = REPO_ROOT / ".cache" / "venv-openstack"
SERVICES = ("placement", "ironic")

PLACEMENT_HEADERS = {"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39"}
IRONIC_API_VERSION = "1.80"

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


# --------------------------------------------------------------------------------------------------- virtualenv


def venv_path() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV).resolve()


def _stamp_name(pins: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest()[:16]
    return f".gpufabric-openstack-{digest}"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def venv_ready(venv: Path | None = None, pins: tuple[str, ...] = PINS) -> bool:
    venv = venv or venv_path()
    return (venv / _stamp_name(pins)).is_file() and (venv / "bin" / "python").exists()


def create_venv(
    venv: Path | None = None, pins: tuple[str, ...] = PINS, python: str | None = None, quiet: bool = True
) -> Path:
    """Build (once) the services virtualenv and return its path. Safe to call from several processes at once.

    Idempotent: a stamp file named after the pin list marks a finished build; a changed pin list rebuilds. An
    exclusive ``flock`` on ``<venv>.lock`` serialises concurrent callers (pytest-xdist workers): the second waits
    and then finds the stamp. If the build failed while a caller waited, it gets the same error without another
    pip run.
    """
    venv = venv or venv_path()
    stamp = venv / _stamp_name(pins)
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
            _build_venv(venv, pins, python or _base_python(), quiet, failure_path, stamp)
            return venv
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _base_python() -> str:
    # A venv made from inside another venv would point at that venv's interpreter; use the real one.
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.environ.get("GPUFABRIC_OPENSTACK_PYTHON") or base


def _build_venv(venv: Path, pins: tuple[str, ...], python: str, quiet: bool, failure_path: Path, stamp: Path) -> None:
    t0 = time.monotonic()
    log_path = venv.with_name(venv.name + ".pip.log")
    if not (venv / "bin" / "python").exists():
        proc = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise VenvBuildError(f"`{python} -m venv {venv}` failed:\n{_tail(proc.stderr)}", offline=False)
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *pins]
    if not quiet:
        print(f"building {venv}: pip install {' '.join(pins)}", file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
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


# --------------------------------------------------------------------------------------------------- services


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


def _check_venv(venv: Path) -> None:
    if not venv_ready(venv):
        raise ServiceError(
            f"the OpenStack services virtualenv {venv} is not built: run `scripts/openstack-services create-venv`"
        )


def _write_pidfile(base: Path, name: str, pid: int, url: str) -> None:
    (base / f"{name}.pid").write_text(f"{pid}\n")
    (base / f"{name}.url").write_text(f"{url}\n")


def start_placement(base: Path, venv: Path | None = None, timeout: float = 60.0) -> Service:
    """Placement (noauth2, sqlite) in ``base``, on a free loopback port. Returns once ``GET /`` answers."""
    venv = venv or venv_path()
    _check_venv(venv)
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    conf = base / "placement.conf"
    # OS_PLACEMENT_CONFIG_DIR names the directory; the file name must be placement.conf.
    conf.write_text(
        "[DEFAULT]\n"
        f"log_file = {base / 'placement.log'}\n"
        "debug = false\n"
        "[api]\n"
        "auth_strategy = noauth2\n"
        "[placement_database]\n"
        f"connection = sqlite:///{base / 'placement.sqlite'}\n"
    )
    env = _service_env(venv, OS_PLACEMENT_CONFIG_DIR=str(base))
    setup_log, out_log = base / "placement-setup.log", base / "placement.out"
    logs = [setup_log, out_log, base / "placement.log"]
    _run_checked(
        [str(venv / "bin" / "placement-manage"), "--config-file", str(conf), "db", "sync"],
        env,
        setup_log,
        "placement db sync",
    )
    cmd = [
        str(venv / "bin" / "python"),
        str(WSGI_SERVE),
        "placement.wsgi.api:application",
        "127.0.0.1",
        "0",
        "--threads",
    ]
    proc = _spawn(cmd, env, out_log)

    def url_of() -> str | None:
        for line in out_log.read_text(errors="replace").splitlines():
            if line.startswith("LISTENING "):
                return f"http://127.0.0.1:{int(line.split()[1])}"
        return None

    url = _wait_ready("placement", proc, url_of, logs, timeout)
    _write_pidfile(base, "placement", proc.pid, url)
    return Service("placement", url, proc.pid, base, logs, proc, time.monotonic() - t0)


def _ironic_conf(base: Path, port: int) -> str:
    return f"""[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = gpufabric-test-ironic
debug = false
log_file = {base / "ironic.log"}
use_stderr = false
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
enabled_deploy_interfaces = fake
enabled_power_interfaces = fake
enabled_management_interfaces = fake
enabled_bios_interfaces = fake,no-bios
enabled_console_interfaces = fake,no-console
enabled_firmware_interfaces = fake,no-firmware
enabled_inspect_interfaces = fake,no-inspect
enabled_raid_interfaces = fake,no-raid
enabled_rescue_interfaces = fake,no-rescue
enabled_vendor_interfaces = fake,no-vendor
enabled_network_interfaces = noop
enabled_storage_interfaces = noop
default_network_interface = noop
default_storage_interface = noop

[api]
host_ip = 127.0.0.1
port = {port}
api_workers = 1

[database]
connection = sqlite:///{base / "ironic.sqlite"}

[dhcp]
dhcp_provider = none

[conductor]
automated_clean = false

[oslo_concurrency]
lock_path = {base / "locks"}
"""


def start_ironic(base: Path, venv: Path | None = None, timeout: float = 90.0) -> Service:
    """Ironic standalone (fake-hardware, noauth, no RPC bus, sqlite) in ``base``, on a free loopback port."""
    venv = venv or venv_path()
    _check_venv(venv)
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    conf = base / "ironic.conf"
    env = _service_env(venv)
    setup_log, out_log = base / "ironic-setup.log", base / "ironic.out"
    logs = [setup_log, out_log, base / "ironic.log"]
    schema_done = (base / "ironic.sqlite").is_file()
    last_error: ServiceError | None = None
    # Ironic binds the port itself, so a free port is picked beforehand; another process may take it in between.
    for _attempt in range(3):
        port = free_port()
        conf.write_text(_ironic_conf(base, port))
        if not schema_done:
            _run_checked(
                [str(venv / "bin" / "ironic-dbsync"), "--config-file", str(conf), "create_schema"],
                env,
                setup_log,
                "ironic-dbsync create_schema",
            )
            schema_done = True
        proc = _spawn([str(venv / "bin" / "ironic"), "--config-file", str(conf)], env, out_log)
        url = f"http://127.0.0.1:{port}"

        def url_of(known: str = url) -> str | None:
            return known

        try:
            _wait_ready("ironic", proc, url_of, logs, timeout)
        except ServiceError as e:
            last_error = e
            _kill_group(proc.pid)
            if "Address already in use" in _logs_tail(logs, 20):
                continue
            raise
        _write_pidfile(base, "ironic", proc.pid, url)
        return Service("ironic", url, proc.pid, base, logs, proc, time.monotonic() - t0)
    assert last_error is not None
    raise last_error


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


@contextlib.contextmanager
def placement_service(base: Path, venv: Path | None = None) -> Iterator[Service]:
    """Placement for the duration of the block; ``.url`` is the endpoint, ``.log_tail()`` for failure messages."""
    with running(start_placement(Path(base), venv)) as service:
        yield service


@contextlib.contextmanager
def ironic_service(base: Path, venv: Path | None = None) -> Iterator[Service]:
    """Ironic for the duration of the block; ``.url`` is the endpoint, ``.log_tail()`` for failure messages."""
    with running(start_ironic(Path(base), venv)) as service:
        yield service


# --------------------------------------------------------------------------------------------------- CLI

USAGE = """usage: scripts/openstack-services COMMAND
  create-venv                build the services virtualenv (once; $GPUFABRIC_OPENSTACK_VENV, default .cache/venv-openstack)
  start placement|ironic BASE  configure, initialise the DB and start the service in directory BASE; prints READY <url>
  stop BASE                  stop every service started in BASE (process group, waits)
  url placement|ironic BASE  print the URL of a service started in BASE
  venv-path                  print the virtualenv path"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    try:
        if cmd == "create-venv" and not rest:
            t0 = time.monotonic()
            already = venv_ready()
            venv = create_venv(quiet=False)
            print(f"{'up to date' if already else 'built'}: {venv} ({time.monotonic() - t0:.1f} s)")
            return 0
        if cmd == "venv-path" and not rest:
            print(venv_path())
            return 0
        if cmd == "start" and len(rest) == 2 and rest[0] in SERVICES:
            base = Path(rest[1]).resolve()
            if (base / f"{rest[0]}.pid").is_file() and _group_alive(int((base / f"{rest[0]}.pid").read_text())):
                print(f"{rest[0]} already running in {base}", file=sys.stderr)
                return 1
            service = (start_placement if rest[0] == "placement" else start_ironic)(base)
            print(f"READY {service.url}  (pid {service.pid}, {service.started_in_s:.1f} s, logs in {base})", flush=True)
            return 0
        if cmd == "stop" and len(rest) == 1:
            stopped = stop(Path(rest[0]).resolve())
            print("stopped: " + (", ".join(stopped) or "nothing was running"))
            return 0
        if cmd == "url" and len(rest) == 2 and rest[0] in SERVICES:
            print((Path(rest[1]) / f"{rest[0]}.url").read_text().strip())
            return 0
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
