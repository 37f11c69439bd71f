"""Start a controller on SQLite and the demo fleet's agents (one process each), and wait until ready."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controller.api.app import create_app
from controller.auth.tokens import Role, create_api_token
from controller.demo import nccl_standin
from controller.demo.fleet import Fleet
from controller.settings import Settings
from controller.store.db import Database
from controller.store.schema import upgrade
from controller.testing import ServerThread

# The agents are a separate program; the controller only starts it, it never imports it.
AGENT_COMMAND = [sys.executable, "-c", "from agent.cli import main; main()"]


class DemoError(RuntimeError):
    pass


@dataclass
class Demo:
    fleet: Fleet
    data_dir: Path
    port: int = 0
    agent_interval_s: float = 3.0
    server: ServerThread | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    admin_token: str = ""
    bootstrap_token: str = ""

    def start_controller(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            data_dir=self.data_dir,
            bind_port=self.port or 0,
            heartbeat_timeout_s=max(30.0, self.agent_interval_s * 10),
            report_interval_s=self.agent_interval_s,
            sweep_interval_s=5.0,
            log_json=True,
            # The shipped kinds and the opt-in fake one the vGPU hosts sit behind.
            backend_kinds=["static", "ironic", "nova", "eks", "fake"],
        )
        db = Database(settings.database_url)
        upgrade(db.engine)
        with db.session() as session:
            _, self.admin_token = create_api_token(session, role=Role.admin, name="demo-admin", created_by="demo")
            _, self.bootstrap_token = create_api_token(
                session, role=Role.bootstrap, name="demo-agents", created_by="demo"
            )
        self.server = ServerThread(create_app(settings, db=db), port=self.port).start()
        return self.server.url

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30)

    def configure(self) -> None:
        """Backend and pools through the admin API, as an operator would."""
        with self.client() as api:
            for b in self.fleet.backends:
                _ok(api.post("/v1/backends", json={"name": b.name, "kind": b.kind, "config": b.config}))
            for pool in self.fleet.pools:
                _ok(
                    api.post(
                        "/v1/pools", json={"name": pool.name, "description": pool.description, "policy": pool.policy}
                    )
                )

    def tenant_lease(self) -> dict[str, Any]:
        """A tenant token, one lease through the tenant API (2 x H100 on one host), then its release."""
        with self.client() as api:
            token = _ok(api.post("/v1/tokens", json={"role": "tenant", "tenant": "demo-tenant", "name": "demo"}))
        tenant_token = token["token"]
        request = {"slices": [{"kind": "gpu", "count": 2, "model": "H100"}], "topology": "same-host"}
        headers = {"Authorization": f"Bearer {tenant_token}", "Idempotency-Key": "demo-lease-1"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as tenant:
            lease = _ok(tenant.post("/v1/leases", json=request))
            released = _ok(tenant.delete(f"/v1/leases/{lease['id']}"))
        return {"request": request, "lease": lease, "released": released, "token": tenant_token}

    def nccl_validation(self, host: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """One NCCL validation of ``host`` through the admin API, its agent running the stand-in binary: the
        dashboard's Validations page then has a curve (labelled simulated). Waits for the verdict."""
        body = {"hosts": [host], "test": "all_reduce_perf", "min_bytes": "8", "max_bytes": "1G", "iters": 5}
        deadline = time.monotonic() + timeout_s
        with self.client() as api:
            validation = _ok(api.post("/v1/validations", json=body))
            while validation["status"] in ("pending", "running"):
                self._check_agents()
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"validation {validation['id']} still {validation['status']} after {timeout_s:.0f}s"
                    )
                time.sleep(0.5)
                validation = _ok(api.get(f"/v1/validations/{validation['id']}"))
        return dict(validation)

    def mig_backed_vgpu_lease(self, token: str) -> dict[str, Any]:
        """A MIG-backed vGPU lease as the demo tenant: placement gives it one GPU instance of the A100 vGPU host
        (the geometry of a MIG slice), the demo's pretend hypervisor attaches it (``fake`` backend: a made-up mdev
        UUID, marked simulated). The lease is kept, so the dashboard shows it on the host's drawing."""
        request = {"slices": [{"kind": "vgpu", "vgpu_type": "A100-3-20C"}]}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "demo-mig-backed-vgpu"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as tenant:
            lease = _ok(tenant.post("/v1/leases", json=request))
        with self.client() as api:
            host = _ok(api.get("/v1/hosts/demo-a100-vgpu-1"))
        return {"request": request, "lease": lease, "host": host}

    def agent_dir(self, host: str) -> Path:
        """One directory per agent: its credential, health and sharing state, simulator state and log.

        Agents derive the place of their other state files from ``--state-file``'s directory, so agents that
        shared a directory overwrote each other's ``health-state.json`` (and raced on its temp file)."""
        return self.data_dir / "agents" / host

    def start_agents(self) -> None:
        # The bootstrap token goes in the environment (GPUFABRIC_BOOTSTRAP_TOKEN, which the agent reads like
        # --bootstrap-token): a command line is visible to every user of the machine in ps.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GPUFABRIC_BOOTSTRAP_TOKEN": self.bootstrap_token}
        # No GPU, no nccl-tests here: the agents run the demo's stand-in binaries (simulated output, said so).
        env["GPUFABRIC_NCCL_TESTS_DIR"] = str(nccl_standin.install(self.data_dir / "nccl-tests"))
        for host in self.fleet.hosts:
            directory = self.agent_dir(host.name)
            directory.mkdir(parents=True, exist_ok=True)
            command = [
                *AGENT_COMMAND, "run",
                "--controller", self.url,
                "--sim", host.spec,
                "--sim-state", str(directory / "sim-state.json"),
                "--hostname", host.name,
                "--state-file", str(directory / "agent.json"),
                "--backend", self.fleet.backend_of(host),
                "--interval", str(self.agent_interval_s),
            ]  # fmt: skip
            with (directory / "agent.log").open("ab") as log:
                self.agents[host.name] = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
                )

    def assign_pools(self, timeout_s: float) -> None:
        """Once each host registered, put it in its pool (and select its MIG config if it differs)."""
        pools = {p.name: p for p in self.fleet.pools}
        pending = {h.name: h for h in self.fleet.hosts if h.pool}
        deadline = time.monotonic() + timeout_s
        with self.client() as api:
            while pending:
                self._check_agents()
                known = {h["hostname"] for h in api.get("/v1/hosts").json()}
                for name in [n for n in pending if n in known]:
                    host = pending.pop(name)
                    _ok(api.put(f"/v1/hosts/{name}/pool", json={"pool": host.pool}))
                    mig = pools[host.pool].policy.get("mig") if host.pool else None
                    if host.mig_selected and mig:
                        body = {"mig": {"config": mig["config"], "selected": host.mig_selected}}
                        _ok(api.put(f"/v1/hosts/{name}/desired", json=body))
                if pending and time.monotonic() > deadline:
                    raise DemoError(f"hosts did not register in {timeout_s:.0f}s: {sorted(pending)}")
                time.sleep(0.3)

    def wait_ready(self, timeout_s: float) -> list[dict[str, Any]]:
        """Until every host reported an inventory and applied its current desired state."""
        deadline = time.monotonic() + timeout_s
        with self.client() as api:
            while True:
                self._check_agents()
                details = [api.get(f"/v1/hosts/{h.name}").json() for h in self.fleet.hosts]
                waiting = [
                    d.get("hostname", "?")
                    for d in details
                    if d.get("status") != "ready"
                    or d.get("applied") is None
                    or d["applied"]["revision"] != d["desired"]["revision"]
                ]
                if not waiting:
                    return details
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"not ready after {timeout_s:.0f}s: {waiting} (logs: {self.data_dir / 'agents'}/*/agent.log)"
                    )
                time.sleep(0.5)

    def _check_agents(self) -> None:
        for name, proc in self.agents.items():
            if proc.poll() is not None:
                log = self.agent_dir(name) / "agent.log"
                tail = log.read_text()[-1500:] if log.exists() else ""
                raise DemoError(f"agent {name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """Stop the agents (SIGTERM, then SIGKILL after 10 s) and the controller; safe to call twice."""
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.agents.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.server is not None:
            self.server.stop()
            self.server = None


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise DemoError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json() if response.content else None


PR_SET_PDEATHSIG = 1
# Resolved here, in the parent: between fork and exec the child only makes the call (no loading, no allocation).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the agent's process before it runs: SIGTERM it when the demo dies, however it dies (a SIGKILL or a
    crash skips the demo's own clean-up), so no simulated agent outlives it. Linux only; elsewhere a no-op."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))
