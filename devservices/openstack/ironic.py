"""OpenStack Ironic 39 standalone (fake-hardware, noauth, no RPC bus, sqlite), on a free loopback port.

Part of ``devservices.openstack`` (see its docstring). Standard library only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from devservices.openstack.process import (
    Service,
    _kill_group,
    _logs_tail,
    _run_checked,
    _service_env,
    _spawn,
    _wait_ready,
    _write_pidfile,
    free_port,
    running,
)
from devservices.openstack.venv import ServiceError, _check_venv, venv_path

IRONIC_API_VERSION = "1.80"


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


@contextlib.contextmanager
def ironic_service(base: Path, venv: Path | None = None) -> Iterator[Service]:
    """Ironic for the duration of the block; ``.url`` is the endpoint, ``.log_tail()`` for failure messages."""
    with running(start_ironic(Path(base), venv)) as service:
        yield service
