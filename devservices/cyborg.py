"""Run real OpenStack Cyborg 17 (API, conductor, agent) beside a real Nova 34 and Placement, for tests.

Cyborg shares Nova's virtualenv (``openstack.NOVA_PINS``: same release cycle, same oslo.* pins) where this repository
is installed editable, so cyborg-agent loads gpufabric's own driver (``gpufabric_gpu_driver``, drivers/cyborg) by its
entry point and learns the host's GPUs from a gpufabric inventory file (what the gpufabric agent keeps beside its
state). It runs on the same MariaDB (a fresh database per deployment) and RabbitMQ as Nova, under Nova's machine-wide
lock (Cyborg's RPC topics are fixed names too).

Order: the Cyborg database and cyborg-api first (Nova's ``[cyborg]`` section needs its URL), then Nova (its lock),
then cyborg-conductor and cyborg-agent with ``host`` = the Nova compute host (the conductor puts the GPUs' ``PGPU``
providers under the compute node's provider, found by that name) and ``[nova]`` = the Nova API (for the
``accelerator-request-bound`` events). Ready when Placement has one ``PGPU`` provider per GPU under the compute node
and the Cyborg API lists their deployables.

Auth: cyborg-api's ``authtoken`` filter is replaced by the same no-auth paste filter as Nova's
(``nova_shims/nova_noauth_shim.py``: any token is the admin); Cyborg and Nova call Placement and each other with
keystoneauth's ``admin_token`` plugin (token ``admin``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devservices import openstack
from devservices.openstack import (
    NOVA_SHIMS,
    PLACEMENT_HEADERS,
    WSGI_SERVE,
    NovaDeployment,
    Service,
    ServiceError,
    _http_json,
    _mysql,
    _run_checked,
    _service_env,
    _spawn,
    _wait_listening,
)

CYBORG_HEADERS = {"X-Auth-Token": "admin", "OpenStack-API-Version": "accelerator 2.0"}
CYBORG_DRIVER = "gpufabric_gpu_driver"
CYBORG_PREFIX = "/accelerator"
# The admin's project as Cyborg sees it (its ARQs' project_id is a UUID field).
CYBORG_ADMIN_PROJECT = "5c0f6b8e2d7a4e0f9a1b3c5d7e9f0a2b"


@dataclass
class CyborgDeployment:
    """Nova (with its lock) plus Cyborg: ``url`` is Cyborg's API root (``.../accelerator``'s endpoint)."""

    url: str
    nova: NovaDeployment
    base: Path
    database: str
    inventory_file: Path
    services: list[Service] = field(default_factory=list)
    started_in_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.base.glob("*.log")) + sorted(self.base.glob("*.out"))
        return openstack._logs_tail(logs, lines) + "\n" + self.nova.log_tail(lines)


def _cyborg_conf(
    base: Path, host: str, db: str, rabbit: str, placement: str, nova: str | None, inventory: Path, interval: int
) -> str:
    nova_section = (
        f"[nova]\nauth_type = admin_token\ntoken = admin\nendpoint = {nova}\nendpoint_override = {nova}\n"
        if nova
        else ""
    )
    return f"""[DEFAULT]
host = {host}
transport_url = {rabbit}
debug = false
use_stderr = false
log_dir = {base}
state_path = {base / "state"}
periodic_interval = {interval}
[api]
api_paste_config = {base / "cyborg-paste.ini"}
[database]
connection = {db}
[placement]
auth_type = admin_token
token = admin
endpoint = {placement}
endpoint_override = {placement}
{nova_section}[agent]
enabled_drivers = {CYBORG_DRIVER}
[gpufabric]
inventory_file = {inventory}
[oslo_concurrency]
lock_path = {base / "locks"}
[oslo_messaging_notifications]
driver = noop
"""


def _cyborg_paste(venv: Path) -> str:
    # Cyborg's links and version documents assume it is served under /accelerator (as devstack mounts it): mount
    # the pipeline there with Paste's urlmap, and authtoken replaced by the no-auth shim.
    source = (venv / "etc" / "cyborg" / "api-paste.ini").read_text()
    replaced = source.replace("[pipeline:main]", "[pipeline:cyborg]").replace(" authtoken api_v2", " noauthshim api_v2")
    if replaced.count("noauthshim") != 1 or "[pipeline:cyborg]" not in replaced:
        raise ServiceError(f"{venv}/etc/cyborg/api-paste.ini has no main pipeline with 'authtoken api_v2' to replace")
    return (
        f"[composite:main]\nuse = egg:Paste#urlmap\n{CYBORG_PREFIX} = cyborg\n\n{replaced}"
        "\n[filter:noauthshim]\npaste.filter_factory = nova_noauth_shim:filter_factory\n"
        f"default_project = {CYBORG_ADMIN_PROJECT}\nservice_roles = service\n"
    )


def nova_cyborg_conf(cyborg_url: str) -> str:
    """Nova's ``[cyborg]`` section: where nova-api (device profiles), nova-conductor (ARQs) and nova-compute find it;
    and ``[service_user]``: Nova calls Cyborg with the request's token plus a service token, and Cyborg binds ARQs
    only for requests carrying one."""
    return (
        f"[cyborg]\nauth_type = admin_token\ntoken = admin\nendpoint = {cyborg_url}\nendpoint_override = {cyborg_url}\n"
        f"[service_user]\nsend_service_user_token = true\nauth_type = admin_token\ntoken = admin\n"
        f"endpoint = {cyborg_url}\n"
    )


def start_nova_with_cyborg(
    base: Path,
    placement_url: str,
    inventory_file: Path,
    venv: Path | None = None,
    db_url: str | None = None,
    rabbit_url: str | None = None,
    timeout: float = 240.0,
    report_interval: int = 2,
) -> CyborgDeployment:
    """Cyborg API, Nova (``openstack.start_nova``, which takes the lock), then Cyborg's conductor and agent."""
    venv = venv or openstack.nova_venv_path()
    if not openstack.venv_ready(venv, openstack.NOVA_PINS, openstack.NOVA_LOCAL):
        raise ServiceError(
            f"the Nova virtualenv {venv} is not built: run `scripts/openstack-services create-venv nova`"
        )
    db_url = (db_url or os.environ.get(openstack.NOVA_DB_ENV) or openstack.DEFAULT_NOVA_DB).rstrip("/")
    rabbit_url = rabbit_url or os.environ.get(openstack.NOVA_RABBIT_ENV) or openstack.DEFAULT_NOVA_RABBIT
    base = base.resolve()
    cy_base = base / "cyborg"
    for sub in ("locks", "state"):
        (cy_base / sub).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    database = f"gf_cyborg_{os.urandom(4).hex()}"
    env = _service_env(venv, PYTHONPATH=str(NOVA_SHIMS))
    setup_log = cy_base / "cyborg-setup.log"
    conf = cy_base / "cyborg.conf"
    deployment: CyborgDeployment | None = None
    services: list[Service] = []
    try:
        for what, url, port in (("MariaDB", db_url, 3306), ("RabbitMQ", rabbit_url, 5672)):
            h, p, ok = openstack._tcp_open(url, port)
            if not ok:
                raise openstack.BackingServiceUnavailable(f"{what} is not reachable at {h}:{p} (Cyborg needs it)")
        _mysql(venv, db_url, [f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"], env, setup_log)
        db = f"{db_url}/{database}"
        conf.write_text(_cyborg_conf(cy_base, "pending", db, rabbit_url, placement_url, None, inventory_file, 60))
        (cy_base / "cyborg-paste.ini").write_text(_cyborg_paste(venv))
        _run_checked(
            [str(venv / "bin" / "cyborg-dbsync"), "--config-file", str(conf), "upgrade"],
            env,
            setup_log,
            "cyborg-dbsync upgrade",
        )
        timings["db_sync"] = round(time.monotonic() - t0, 1)
        api_out = cy_base / "cyborg-api.out"
        serve = [str(venv / "bin" / "python"), str(WSGI_SERVE), "cyborg.wsgi.api:application", "127.0.0.1", "0"]
        api = _spawn([*serve, "--threads", "--", "--config-file", str(conf)], env, api_out)
        services.append(Service("cyborg-api", "", api.pid, cy_base, [api_out, cy_base / "cyborg-api.log"], api))
        cyborg_url = f"http://127.0.0.1:{_wait_listening('cyborg-api', api, api_out, timeout)}{CYBORG_PREFIX}"
        timings["api_listening"] = round(time.monotonic() - t0, 1)

        nova = openstack.start_nova(
            base / "nova", placement_url, venv, db_url, rabbit_url, timeout, extra_conf=nova_cyborg_conf(cyborg_url)
        )
        deployment = CyborgDeployment(cyborg_url, nova, cy_base, database, inventory_file, services)
        timings["nova"] = round(nova.started_in_s, 1)
        t = time.monotonic()
        conf.write_text(
            _cyborg_conf(cy_base, nova.host, db, rabbit_url, placement_url, nova.url, inventory_file, report_interval)
        )
        for name in ("cyborg-conductor", "cyborg-agent"):
            out = cy_base / f"{name}.out"
            proc = _spawn([str(venv / "bin" / name), "--config-file", str(conf)], env, out)
            services.append(Service(name, "", proc.pid, cy_base, [out, cy_base / f"{name}.log"], proc))
        _wait_devices(deployment, placement_url, timeout)
        timings["devices_reported"] = round(time.monotonic() - t, 1)
    except BaseException:
        if deployment is not None:
            stop_nova_with_cyborg(deployment)
        else:
            _stop_services(services)
            with contextlib.suppress(ServiceError):
                _mysql(venv, db_url, [f"DROP DATABASE IF EXISTS `{database}`"], env, setup_log)
        raise
    deployment.started_in_s = time.monotonic() - t0
    deployment.timings = timings
    return deployment


def expected_devices(inventory_file: Path) -> int:
    """How many GPUs of the inventory file Cyborg should report (the driver's own reading of it)."""
    sys.path.insert(0, str(openstack.REPO_ROOT))
    from drivers.cyborg.devices import read_inventory

    return len(read_inventory(inventory_file))


def _wait_devices(deployment: CyborgDeployment, placement_url: str, timeout: float) -> None:
    want = expected_devices(deployment.inventory_file)
    host = deployment.nova.host
    deadline = time.monotonic() + timeout
    while True:
        for svc in deployment.services:
            if svc.process is not None and svc.process.poll() is not None:
                raise ServiceError(f"{svc.name} exited with code {svc.process.returncode}:\n{deployment.log_tail()}")
        rps = _http_json(f"{placement_url}/resource_providers?resources=PGPU:1", PLACEMENT_HEADERS) or {}
        mine = [rp for rp in rps.get("resource_providers", []) if rp["name"].startswith(f"{host}_")]
        deps = _http_json(f"{deployment.url}/v2/deployables", CYBORG_HEADERS) or {}
        bound = [d for d in deps.get("deployables", []) if d.get("rp_uuid")]
        if len(mine) == want and len(bound) == want:
            return
        if time.monotonic() > deadline:
            raise ServiceError(
                f"Cyborg reported {len(mine)} of {want} GPU providers for {host} within {timeout:.0f} s:\n"
                f"{deployment.log_tail()}"
            )
        time.sleep(0.25)


def _stop_services(services: list[Service]) -> None:
    for svc in services:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(svc.pid, signal.SIGTERM)
    for svc in reversed(services):
        openstack._kill_group(svc.pid)
        if svc.process is not None:
            with contextlib.suppress(Exception):
                svc.process.wait(timeout=5)


def stop_nova_with_cyborg(deployment: CyborgDeployment) -> None:
    """Stop Cyborg's processes, then Nova (which drops its databases and releases the lock); drop Cyborg's DB."""
    try:
        _stop_services(deployment.services)
        env = _service_env(deployment.nova.venv)
        with contextlib.suppress(ServiceError):
            _mysql(
                deployment.nova.venv,
                deployment.nova.db_url,
                [f"DROP DATABASE IF EXISTS `{deployment.database}`"],
                env,
                deployment.base / "cyborg-setup.log",
            )
    finally:
        openstack.stop_nova(deployment.nova)


def run(base: Path, placement_url: str, inventory_file: Path) -> int:
    """``scripts/openstack-services run cyborg``: start, print READY, keep running until SIGINT/SIGTERM."""
    deployment = start_nova_with_cyborg(base, placement_url, inventory_file.resolve())
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"READY cyborg {deployment.url} nova {deployment.nova.url} host {deployment.nova.host} "
        f"({deployment.started_in_s:.1f} s: {deployment.timings}; logs in {base})",
        flush=True,
    )
    try:
        while not stopping:
            time.sleep(0.5)
    finally:
        stop_nova_with_cyborg(deployment)
    return 0
