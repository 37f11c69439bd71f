"""OpenStack Placement 16 (noauth2, sqlite) under ``wsgi_serve.py``, on a free loopback port.

Part of ``devservices.openstack`` (see its docstring). Standard library only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from devservices.openstack.process import (
    WSGI_SERVE,
    Service,
    _run_checked,
    _service_env,
    _spawn,
    _wait_ready,
    _write_pidfile,
    running,
)
from devservices.openstack.venv import _check_venv, venv_path

PLACEMENT_HEADERS = {"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39"}


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


@contextlib.contextmanager
def placement_service(base: Path, venv: Path | None = None) -> Iterator[Service]:
    """Placement for the duration of the block; ``.url`` is the endpoint, ``.log_tail()`` for failure messages."""
    with running(start_placement(Path(base), venv)) as service:
        yield service
