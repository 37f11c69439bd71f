"""Run a real OpenStack Keystone (identity v3) as a local process, from the OpenStack services virtualenv.

Keystone 30 (``keystone==30.0.0`` in ``devservices.openstack.PINS``): SQLite database, fernet tokens (keys made by
``keystone-manage fernet_setup`` / ``credential_setup``), an admin user, project and the roles ``admin``, ``member``
and ``reader`` made by ``keystone-manage bootstrap``, served by the stdlib WSGI server (``wsgi_serve.py``) on a free
loopback port. ``seed`` then adds what a test needs (projects, users, role assignments) through Keystone's own API.

Standard library only, like ``devservices.openstack``; started by the pytest fixture of the Keystone tests and by
``scripts/openstack-services start keystone BASE``.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devservices.openstack import (
    WSGI_SERVE,
    Service,
    _check_venv,
    _run_checked,
    _service_env,
    _spawn,
    _wait_ready,
    _write_pidfile,
    free_port,
    running,
    venv_path,
)

ADMIN_USER = "admin"
ADMIN_PASSWORD = "keystone-test-admin"  # a throwaway service on loopback, made and removed by the test
REGION = "RegionOne"


def _keystone_conf(base: Path) -> str:
    return f"""[DEFAULT]
log_file = {base / "keystone.log"}
debug = false
[database]
connection = sqlite:///{base / "keystone.sqlite"}
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = {base / "fernet-keys"}
[fernet_receipts]
key_repository = {base / "fernet-receipts"}
[credential]
key_repository = {base / "credential-keys"}
"""


def start_keystone(base: Path, venv: Path | None = None, timeout: float = 90.0) -> Service:
    """Keystone (fernet, sqlite) in ``base``, bootstrapped with an admin; returns once ``GET /v3`` answers."""
    venv = venv or venv_path()
    _check_venv(venv)
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    conf = base / "keystone.conf"
    conf.write_text(_keystone_conf(base))
    env = _service_env(venv, OS_KEYSTONE_CONFIG_FILES=str(conf))
    setup_log, out_log = base / "keystone-setup.log", base / "keystone.out"
    logs = [setup_log, out_log, base / "keystone.log"]
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
    # keystone-manage makes the key repositories owned by a `keystone` user unless told to use ours.
    owner = [
        "--keystone-user",
        pwd.getpwuid(os.getuid()).pw_name,
        "--keystone-group",
        grp.getgrgid(os.getgid()).gr_name,
    ]
    _run_checked([*manage, "db_sync"], env, setup_log, "keystone-manage db_sync")
    _run_checked([*manage, "fernet_setup", *owner], env, setup_log, "keystone-manage fernet_setup")
    _run_checked([*manage, "credential_setup", *owner], env, setup_log, "keystone-manage credential_setup")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    _run_checked(
        [
            *manage,
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-admin-url",
            f"{url}/v3",
            "--bootstrap-internal-url",
            f"{url}/v3",
            "--bootstrap-public-url",
            f"{url}/v3",
            "--bootstrap-region-id",
            REGION,
        ],
        env,
        setup_log,
        "keystone-manage bootstrap",
    )
    cmd = [
        str(venv / "bin" / "python"),
        str(WSGI_SERVE),
        "keystone.wsgi.api:application",
        "127.0.0.1",
        str(port),
        "--threads",
    ]
    proc = _spawn(cmd, env, out_log)
    # GET / answers 300 (the version list); /v3/ answers 200 once the application is up.
    url = _wait_ready("keystone", proc, lambda: f"{url}/v3", logs, timeout).removesuffix("/v3")
    _write_pidfile(base, "keystone", proc.pid, url)
    return Service("keystone", url, proc.pid, base, logs, proc, time.monotonic() - t0)


@contextlib.contextmanager
def keystone_service(base: Path, venv: Path | None = None) -> Iterator[Service]:
    """Keystone for the duration of the block; ``.url`` is the endpoint (without ``/v3``)."""
    with running(start_keystone(Path(base), venv)) as service:
        yield service


# --------------------------------------------------------------------------------------------- its own API


def call(
    url: str, method: str, path: str, token: str | None = None, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    """One Keystone v3 call: ``(status, headers, JSON body or None)``; HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}/v3{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    for k, v in headers.items():
        req.add_header(k.replace("_", "-"), v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return exc.code, dict(exc.headers), parsed


def password_token(url: str, user: str, password: str, project: str | None, domain: str = "Default") -> str:
    """A token for ``user`` (in ``domain``), scoped to ``project`` (in ``domain``) or unscoped."""
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"name": domain}, "password": password}},
        }
    }
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
    status, headers, body = call(url, "POST", "/auth/tokens", body={"auth": auth})
    if status != 201:
        raise RuntimeError(f"Keystone refused a token for {user}: HTTP {status} {body}")
    token = {k.lower(): v for k, v in headers.items()}["x-subject-token"]
    return str(token)


def admin_token(url: str) -> str:
    return password_token(url, ADMIN_USER, ADMIN_PASSWORD, "admin")


def _id_of(url: str, token: str, kind: str, name: str) -> str:
    status, _, body = call(url, "GET", f"/{kind}?name={name}", token)
    if status != 200 or not body[kind]:
        raise RuntimeError(f"Keystone has no {kind[:-1]} {name}: HTTP {status} {body}")
    return str(body[kind][0]["id"])


def seed_user(url: str, project: str, user: str, password: str, role: str = "member") -> dict[str, str]:
    """Create (in the Default domain) ``project``, ``user`` with ``password``, and give the user ``role`` on it."""
    token = admin_token(url)
    status, _, body = call(url, "POST", "/projects", token, {"project": {"name": project, "domain_id": "default"}})
    project_id = body["project"]["id"] if status == 201 else _id_of(url, token, "projects", project)
    status, _, body = call(
        url, "POST", "/users", token, {"user": {"name": user, "password": password, "domain_id": "default"}}
    )
    if status != 201:
        raise RuntimeError(f"Keystone refused user {user}: HTTP {status} {body}")
    user_id = body["user"]["id"]
    role_id = _id_of(url, token, "roles", role)
    status, _, body = call(url, "PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}", token)
    if status not in (200, 204):
        raise RuntimeError(f"Keystone refused the role assignment: HTTP {status} {body}")
    return {"project_id": project_id, "user_id": user_id}


def revoke(url: str, token: str) -> int:
    """Revoke ``token`` (``DELETE /v3/auth/tokens``, as the admin); Keystone's status."""
    status, _, _ = call(url, "DELETE", "/auth/tokens", admin_token(url), X_Subject_Token=token)
    return status
