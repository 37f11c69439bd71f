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

The package, by module: ``venv`` (the virtualenv, ``ServiceError``), ``process`` (the generic ``Service``: spawn,
wait, pid files, stop), ``placement``, ``ironic``, ``nova`` (Nova deployment, MariaDB/RabbitMQ, the machine-wide
lock) and ``cli`` (``main``; ``python -m devservices.openstack``). Every name is re-exported here, so callers (and
``devservices.keystone`` / ``devservices.cyborg``, which build on it) import from ``devservices.openstack``.
"""

from __future__ import annotations

from devservices.openstack.cli import (
    USAGE,
    _starter,
    main,
)
from devservices.openstack.ironic import (
    IRONIC_API_VERSION,
    IRONIC_TEST_POLICY,
    _ironic_conf,
    ironic_service,
    start_ironic,
)
from devservices.openstack.nova import (
    DEFAULT_NOVA_DB,
    DEFAULT_NOVA_RABBIT,
    DEFAULT_NOVA_VENV,
    NOVA_DB_ENV,
    NOVA_LOCAL,
    NOVA_LOCK,
    NOVA_PCI_ALIAS,
    NOVA_PCI_RESOURCE_CLASS,
    NOVA_PINS,
    NOVA_RABBIT_ENV,
    NOVA_SHIMS,
    NOVA_VENV_ENV,
    BackingServiceUnavailable,
    NovaDeployment,
    _mysql,
    _nova_conf,
    _nova_paste,
    _tcp_open,
    create_nova_venv,
    nova_service,
    nova_venv_path,
    start_nova,
    stop_nova,
)
from devservices.openstack.placement import (
    PLACEMENT_HEADERS,
    placement_service,
    start_placement,
)
from devservices.openstack.process import (
    SERVICES,
    WSGI_SERVE,
    Service,
    _group_alive,
    _http_json,
    _http_ok,
    _kill_group,
    _logs_tail,
    _reap,
    _run_checked,
    _service_env,
    _spawn,
    _wait_listening,
    _wait_ready,
    _write_pidfile,
    free_port,
    running,
    stop,
)
from devservices.openstack.venv import (
    _OFFLINE_MARKERS,
    DEFAULT_VENV,
    PINS,
    REPO_ROOT,
    VENV_ENV,
    ServiceError,
    VenvBuildError,
    _base_python,
    _build_venv,
    _check_venv,
    _stamp_name,
    _stamped,
    _tail,
    create_venv,
    venv_path,
    venv_ready,
)

__all__ = [
    "DEFAULT_NOVA_DB",
    "DEFAULT_NOVA_RABBIT",
    "DEFAULT_NOVA_VENV",
    "DEFAULT_VENV",
    "IRONIC_API_VERSION",
    "IRONIC_TEST_POLICY",
    "NOVA_DB_ENV",
    "NOVA_LOCAL",
    "NOVA_LOCK",
    "NOVA_PCI_ALIAS",
    "NOVA_PCI_RESOURCE_CLASS",
    "NOVA_PINS",
    "NOVA_RABBIT_ENV",
    "NOVA_SHIMS",
    "NOVA_VENV_ENV",
    "PINS",
    "PLACEMENT_HEADERS",
    "REPO_ROOT",
    "SERVICES",
    "USAGE",
    "VENV_ENV",
    "WSGI_SERVE",
    "_OFFLINE_MARKERS",
    "BackingServiceUnavailable",
    "NovaDeployment",
    "Service",
    "ServiceError",
    "VenvBuildError",
    "_base_python",
    "_build_venv",
    "_check_venv",
    "_group_alive",
    "_http_json",
    "_http_ok",
    "_ironic_conf",
    "_kill_group",
    "_logs_tail",
    "_mysql",
    "_nova_conf",
    "_nova_paste",
    "_reap",
    "_run_checked",
    "_service_env",
    "_spawn",
    "_stamp_name",
    "_stamped",
    "_starter",
    "_tail",
    "_tcp_open",
    "_wait_listening",
    "_wait_ready",
    "_write_pidfile",
    "create_nova_venv",
    "create_venv",
    "free_port",
    "ironic_service",
    "main",
    "nova_service",
    "nova_venv_path",
    "placement_service",
    "running",
    "start_ironic",
    "start_nova",
    "start_placement",
    "stop",
    "stop_nova",
    "venv_path",
    "venv_ready",
]
