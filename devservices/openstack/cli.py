"""The command line of ``scripts/openstack-services`` (``python -m devservices.openstack``).

Part of ``devservices.openstack`` (see its docstring). Standard library only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from devservices.openstack.ironic import start_ironic
from devservices.openstack.nova import create_nova_venv
from devservices.openstack.placement import start_placement
from devservices.openstack.process import SERVICES, Service, _group_alive, stop
from devservices.openstack.venv import ServiceError, create_venv, venv_path, venv_ready

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
