"""Run real OpenStack Placement, Ironic and Keystone as local processes, from their own virtualenv.

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
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WSGI_SERVE = Path(__file__).resolve().with_name("wsgi_serve.py")

# Exact pins: the services are test fixtures, so upgrades are deliberate (and change the stamp -> rebuild).
PINS: tuple[str, ...] = (
    "openstack-placement==16.0.0",
    "ironic==39.0.0",
    "keystone==30.0.0",
    "openstacksdk==4.22.0",
)
VENV_ENV = "GPUFABRIC_OPENSTACK_VENV"
DEFAULT_VENV = REPO_ROOT / ".cache" / "venv-openstack"
SERVICES = ("placement", "ironic", "keystone")  # keystone: devservices/keystone.py

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

[oslo_policy]
policy_file = {base / "policy.yaml"}
"""


# Tests read the config drive gpufabric gave a node back through the API (instance_info.configdrive), which Ironic
# masks unless this policy allows it (its default is "!"; never do this in production).
IRONIC_TEST_POLICY = '"show_instance_secrets": "@"\n'


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
        (base / "policy.yaml").write_text(IRONIC_TEST_POLICY)
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


# --------------------------------------------------------------------------------------------------- Nova
#
# Nova 34 with a fake GPU virt driver (devservices/nova_shims), from its own virtualenv (its oslo.* pins differ
# from Placement's and Ironic's). Needs MariaDB and RabbitMQ, which the CI machine runs on 127.0.0.1:3306 (root, no
# password) and 127.0.0.1:5672 (guest/guest); each deployment gets fresh databases and a fresh compute host name.
# RabbitMQ topic queues are named after the topic ("conductor", "scheduler"), so two Nova deployments on one broker
# vhost would consume each other's messages: a machine-wide lock (NOVA_LOCK) lets only one run at a time.

# Cyborg 17.0.0 is Nova 34's release cycle: the same oslo.* pins, so it shares Nova's virtualenv. This repository is
# installed there too (editable, no dependencies) for the Cyborg agent driver's entry point (drivers/cyborg).
NOVA_PINS: tuple[str, ...] = ("nova==34.0.0", "openstack-cyborg==17.0.0", "PyMySQL==1.1.2", "openstacksdk==4.22.0")
NOVA_LOCAL: tuple[Path, ...] = (REPO_ROOT,)
NOVA_VENV_ENV = "GPUFABRIC_NOVA_VENV"
DEFAULT_NOVA_VENV = REPO_ROOT / ".cache" / "venv-nova"
NOVA_DB_ENV = "GPUFABRIC_NOVA_DB"  # mysql+pymysql://root@127.0.0.1:3306
NOVA_RABBIT_ENV = "GPUFABRIC_NOVA_RABBIT"  # rabbit://guest:guest@127.0.0.1:5672/
DEFAULT_NOVA_DB = "mysql+pymysql://root@127.0.0.1:3306"
DEFAULT_NOVA_RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"
NOVA_SHIMS = Path(__file__).resolve().with_name("nova_shims")
NOVA_LOCK = Path(os.environ.get("GPUFABRIC_NOVA_LOCK", "/tmp/gpufabric-nova.lock"))
NOVA_PCI_ALIAS = "a100"
NOVA_PCI_RESOURCE_CLASS = "CUSTOM_GPU_A100_80GB"


class BackingServiceUnavailable(ServiceError):
    """MariaDB or RabbitMQ is not reachable (not a Nova failure: the machine lacks a service Nova needs)."""


def nova_venv_path() -> Path:
    return Path(os.environ.get(NOVA_VENV_ENV) or DEFAULT_NOVA_VENV).resolve()


def create_nova_venv(quiet: bool = True) -> Path:
    return create_venv(nova_venv_path(), NOVA_PINS, quiet=quiet, local=NOVA_LOCAL)


@dataclass
class NovaDeployment:
    """A running Nova: ``url`` is the compute endpoint (``.../v2.1``); ``host`` the compute host / hypervisor name."""

    url: str
    base: Path
    host: str
    services: list[Service]
    databases: list[str]
    db_url: str
    venv: Path
    lock: Any = None
    started_in_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.base.glob("*.log")) + sorted(self.base.glob("*.out"))
        return _logs_tail(logs, lines)


def _tcp_open(url: str, default_port: int) -> tuple[str, int, bool]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return host, port, True
    except OSError:
        return host, port, False


def _nova_conf(base: Path, host: str, db_url: str, dbs: dict[str, str], rabbit: str, placement: str, stub: str) -> str:
    spec = json.dumps(
        {
            "vendor_id": "10de",
            "product_id": "20b5",
            "resource_class": NOVA_PCI_RESOURCE_CLASS,
            "traits": "CUSTOM_GPU_A100",
        }
    )
    alias = json.dumps({"resource_class": NOVA_PCI_RESOURCE_CLASS, "device_type": "type-PCI", "name": NOVA_PCI_ALIAS})
    return f"""[DEFAULT]
host = {host}
my_ip = 127.0.0.1
compute_driver = fake_gpu.FakeGPUDriver
transport_url = {rabbit}
state_path = {base / "state"}
log_dir = {base}
use_stderr = false
debug = false
instances_path = {base / "instances"}
update_resources_interval = 2
heal_instance_info_cache_interval = -1
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = {base / "api-paste.ini"}
[api_database]
connection = {db_url}/{dbs["api"]}
[database]
connection = {db_url}/{dbs["cell1"]}
[placement]
auth_type = admin_token
token = admin
endpoint = {placement}
endpoint_override = {placement}
[glance]
auth_type = none
endpoint_override = {stub}
[neutron]
auth_type = none
endpoint_override = {stub}
[cinder]
auth_type = none
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 1
[conductor]
workers = 1
[filter_scheduler]
pci_in_placement = true
enabled_filters = ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter
[pci]
report_in_placement = true
device_spec = {spec}
alias = {alias}
[oslo_concurrency]
lock_path = {base / "locks"}
[oslo_messaging_notifications]
driver = noop
[vnc]
# The fake driver answers a VNC console (fakevncconsole.com:6969): Nova issues a noVNC URL with a console token, which
# the lease's access hands out. No noVNC proxy runs here, so nothing answers at that URL.
enabled = true
novncproxy_base_url = http://127.0.0.1:6080/vnc_auto.html
"""


def _nova_paste(venv: Path) -> str:
    source = (venv / "etc" / "nova" / "api-paste.ini").read_text()
    replaced = source.replace(" authtoken keystonecontext", " noauthshim keystonecontext")
    if replaced == source:
        raise ServiceError(f"{venv}/etc/nova/api-paste.ini has no 'authtoken keystonecontext' pipeline to replace")
    return replaced + "\n[filter:noauthshim]\npaste.filter_factory = nova_noauth_shim:filter_factory\n"


def _mysql(venv: Path, db_url: str, statements: list[str], env: dict[str, str], log: Path) -> None:
    script = (
        "import sys, pymysql\nfrom urllib.parse import urlsplit\n"
        "u = urlsplit(sys.argv[1].replace('mysql+pymysql', 'mysql'))\n"
        "c = pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or 'root', password=u.password or '')\n"
        "cur = c.cursor()\n"
        "for s in sys.argv[2:]: cur.execute(s)\n"
        "c.commit()\n"
    )
    _run_checked([str(venv / "bin" / "python"), "-c", script, db_url, *statements], env, log, "MariaDB setup")


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


def start_nova(
    base: Path,
    placement_url: str,
    venv: Path | None = None,
    db_url: str | None = None,
    rabbit_url: str | None = None,
    timeout: float = 240.0,
    lock_timeout: float = 900.0,
    extra_conf: str = "",
) -> NovaDeployment:
    """Nova API, conductor, scheduler and a compute with the fake GPU driver, against ``placement_url``.

    ``extra_conf`` is appended to nova.conf (the ``[cyborg]`` section, ``devservices.cyborg``).

    Returns once the compute host is a hypervisor and its pGPU and PCI providers are in Placement. Raises
    ``BackingServiceUnavailable`` when MariaDB or RabbitMQ does not answer, ``ServiceError`` otherwise.
    """
    venv = venv or nova_venv_path()
    if not venv_ready(venv, NOVA_PINS, NOVA_LOCAL):
        raise ServiceError(
            f"the Nova virtualenv {venv} is not built: run `scripts/openstack-services create-venv nova`"
        )
    db_url = (db_url or os.environ.get(NOVA_DB_ENV) or DEFAULT_NOVA_DB).rstrip("/")
    rabbit_url = rabbit_url or os.environ.get(NOVA_RABBIT_ENV) or DEFAULT_NOVA_RABBIT
    for what, url, port in (("MariaDB", db_url, 3306), ("RabbitMQ", rabbit_url, 5672)):
        h, p, ok = _tcp_open(url, port)
        if not ok:
            raise BackingServiceUnavailable(
                f"{what} is not reachable at {h}:{p} (Nova needs it; set ${NOVA_DB_ENV} / ${NOVA_RABBIT_ENV})"
            )
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("locks", "state", "instances"):
        (base / sub).mkdir(exist_ok=True)
    lock = open(NOVA_LOCK, "a+")  # noqa: SIM115 - held for the deployment's lifetime, closed in stop_nova
    t_lock = time.monotonic()
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - t_lock > lock_timeout:
                lock.close()
                raise ServiceError(f"another Nova deployment held {NOVA_LOCK} for {lock_timeout:.0f} s") from None
            time.sleep(0.5)
    t0 = time.monotonic()
    timings: dict[str, float] = {"lock_wait": round(t0 - t_lock, 1)}
    suffix = os.urandom(4).hex()
    host = f"gpufabric-cmp-{suffix}"
    dbs = {"api": f"gf_nova_api_{suffix}", "cell0": f"gf_nova_cell0_{suffix}", "cell1": f"gf_nova_{suffix}"}
    env = _service_env(venv, PYTHONPATH=str(NOVA_SHIMS), OS_NOVA_CONFIG_DIR=str(base))
    setup_log = base / "nova-setup.log"
    deployment = NovaDeployment("", base, host, [], list(dbs.values()), db_url, venv, lock)
    try:
        _mysql(venv, db_url, [f"CREATE DATABASE `{d}` CHARACTER SET utf8mb4" for d in dbs.values()], env, setup_log)

        stub_out = base / "stub.out"
        stub = _spawn(
            [str(venv / "bin" / "python"), str(NOVA_SHIMS / "fake_glance_neutron.py"), "127.0.0.1", "0"], env, stub_out
        )
        deployment.services.append(Service("nova-stub", "", stub.pid, base, [stub_out], stub))
        stub_url = f"http://127.0.0.1:{_wait_listening('glance/neutron stub', stub, stub_out, 30)}"

        conf = base / "nova.conf"
        conf.write_text(_nova_conf(base, host, db_url, dbs, rabbit_url, placement_url, stub_url) + extra_conf)
        (base / "api-paste.ini").write_text(_nova_paste(venv))
        manage = [str(venv / "bin" / "nova-manage"), "--config-file", str(conf)]
        t = time.monotonic()
        _run_checked([*manage, "api_db", "sync"], env, setup_log, "nova-manage api_db sync")
        _run_checked(
            [*manage, "cell_v2", "map_cell0", "--database_connection", f"{db_url}/{dbs['cell0']}"],
            env,
            setup_log,
            "nova-manage cell_v2 map_cell0",
        )
        _run_checked(
            [*manage, "cell_v2", "create_cell", "--name", "cell1"], env, setup_log, "nova-manage cell_v2 create_cell"
        )
        _run_checked([*manage, "db", "sync"], env, setup_log, "nova-manage db sync")
        timings["db_sync"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        for name, cmd in (
            ("nova-conductor", [str(venv / "bin" / "nova-conductor"), "--config-file", str(conf)]),
            ("nova-scheduler", [str(venv / "bin" / "nova-scheduler"), "--config-file", str(conf)]),
            (
                "nova-compute",
                [str(venv / "bin" / "python"), str(NOVA_SHIMS / "run_nova_compute.py"), "--config-file", str(conf)],
            ),
        ):
            out = base / f"{name}.out"
            proc = _spawn(cmd, env, out)
            deployment.services.append(Service(name, "", proc.pid, base, [out, base / f"{name}.log"], proc))
        api_out = base / "nova-api.out"
        api = _spawn(
            [
                str(venv / "bin" / "python"),
                str(WSGI_SERVE),
                "nova.wsgi.osapi_compute:application",
                "127.0.0.1",
                "0",
                "--threads",
            ],
            env,
            api_out,
        )
        deployment.services.append(Service("nova-api", "", api.pid, base, [api_out], api))
        port = _wait_listening("nova-api", api, api_out, timeout)
        deployment.url = f"http://127.0.0.1:{port}/v2.1"
        timings["api_listening"] = round(time.monotonic() - t, 1)

        # Ready: the compute is a hypervisor (the scheduler mapped it into cell1) and its GPU providers are in Placement.
        deadline = time.monotonic() + timeout
        headers = {"X-Auth-Token": "admin:admin", "OpenStack-API-Version": "compute 2.53"}
        while True:
            for svc in deployment.services:
                if svc.process is not None and svc.process.poll() is not None:
                    raise ServiceError(
                        f"{svc.name} exited with code {svc.process.returncode}:\n{deployment.log_tail()}"
                    )
            hyp = _http_json(f"{deployment.url}/os-hypervisors", headers)
            rps = _http_json(f"{placement_url}/resource_providers", PLACEMENT_HEADERS)
            names = [rp["name"] for rp in (rps or {}).get("resource_providers", []) if rp["name"].startswith(host)]
            if (
                hyp
                and any(h.get("hypervisor_hostname") == host for h in hyp.get("hypervisors", []))
                and sum("_pci_0000_8" in n for n in names) == 2
                and sum(n.startswith(f"{host}_0000:81:") for n in names) == 2
            ):
                break
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"Nova compute {host} not ready within {timeout:.0f} s (providers: {names}):\n{deployment.log_tail()}"
                )
            time.sleep(0.25)
        timings["compute_ready"] = round(time.monotonic() - t, 1)
    except BaseException:
        stop_nova(deployment)
        raise
    deployment.started_in_s = time.monotonic() - t0
    deployment.timings = timings
    return deployment


def _http_json(url: str, headers: dict[str, str]) -> Any:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def stop_nova(deployment: NovaDeployment) -> None:
    """Stop every Nova process (API first, compute last), drop the databases, release the machine-wide lock."""
    try:
        # SIGTERM every group at once (each takes a few seconds to shut down), then wait for each.
        for svc in deployment.services:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.pid, signal.SIGTERM)
        for svc in reversed(deployment.services):
            _kill_group(svc.pid)
            if svc.process is not None:
                with contextlib.suppress(Exception):
                    svc.process.wait(timeout=5)
        if deployment.databases:
            env = _service_env(deployment.venv)
            with contextlib.suppress(ServiceError):
                _mysql(
                    deployment.venv,
                    deployment.db_url,
                    [f"DROP DATABASE IF EXISTS `{d}`" for d in deployment.databases],
                    env,
                    deployment.base / "nova-setup.log",
                )
    finally:
        if deployment.lock is not None:
            with contextlib.suppress(Exception):
                fcntl.flock(deployment.lock, fcntl.LOCK_UN)
                deployment.lock.close()
            deployment.lock = None


@contextlib.contextmanager
def nova_service(base: Path, placement_url: str, venv: Path | None = None) -> Iterator[NovaDeployment]:
    deployment = start_nova(Path(base), placement_url, venv)
    try:
        yield deployment
    finally:
        stop_nova(deployment)


# --------------------------------------------------------------------------------------------------- CLI

USAGE = """usage: scripts/openstack-services COMMAND
  create-venv nova           build the Nova virtualenv ($GPUFABRIC_NOVA_VENV, default .cache/venv-nova)
  create-venv                build the services virtualenv (once; $GPUFABRIC_OPENSTACK_VENV, default .cache/venv-openstack)
  start placement|ironic|keystone BASE  configure, initialise the DB and start the service in BASE; prints READY <url>
  stop BASE                  stop every service started in BASE (process group, waits)
  url placement|ironic|keystone BASE  print the URL of a service started in BASE
  run cyborg BASE PLACEMENT_URL INVENTORY  Nova + Cyborg (API, conductor, agent reading the gpufabric agent's
                             INVENTORY file) on that Placement; prints READY, runs until Ctrl-C / SIGTERM
  venv-path                  print the virtualenv path"""


def _starter(name: str) -> Callable[[Path], Service]:
    if name == "keystone":
        from devservices.keystone import start_keystone  # it builds on this module

        return start_keystone
    return start_placement if name == "placement" else start_ironic


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    try:
        if cmd == "create-venv" and rest == ["nova"]:
            t0 = time.monotonic()
            venv = create_nova_venv(quiet=False)
            print(f"ready: {venv} ({time.monotonic() - t0:.1f} s)")
            return 0
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
            service = _starter(rest[0])(base)
            print(f"READY {service.url}  (pid {service.pid}, {service.started_in_s:.1f} s, logs in {base})", flush=True)
            return 0
        if cmd == "stop" and len(rest) == 1:
            stopped = stop(Path(rest[0]).resolve())
            print("stopped: " + (", ".join(stopped) or "nothing was running"))
            return 0
        if cmd == "run" and len(rest) == 4 and rest[0] == "cyborg":
            from devservices.cyborg import run  # it builds on this module

            return run(Path(rest[1]).resolve(), rest[2], Path(rest[3]))
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
