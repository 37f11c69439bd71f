"""OpenStack Nova 34 (API, conductor, scheduler, a compute with a fake GPU driver) on MariaDB and RabbitMQ.

Part of ``devservices.openstack`` (see its docstring). Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devservices.openstack.placement import PLACEMENT_HEADERS
from devservices.openstack.process import (
    WSGI_SERVE,
    Service,
    _http_json,
    _kill_group,
    _logs_tail,
    _run_checked,
    _service_env,
    _spawn,
    _wait_listening,
)
from devservices.openstack.venv import REPO_ROOT, ServiceError, create_venv, venv_ready

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
NOVA_SHIMS = Path(__file__).resolve().parents[1] / "nova_shims"
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
