"""The agent loop: register, collect, report, converge, report results — pull only.

Each cycle opens NVML, collects the inventory and reports it (or a heartbeat when nothing changed
since the last accepted report). The reply carries the desired state; when its revision differs
from what this host last applied, the agent converges (``agent.converge``) and reports again at
once. If the controller cannot be reached the GPUs are left exactly as they are and the agent
retries with jittered exponential backoff, reporting again when the controller is back.

A fleet must not arrive in lockstep (100,000 agents reconnecting after an outage, or a DaemonSet
rollout): every wait is randomised. A busy controller answers 429/503 with ``Retry-After``; the
agent waits at least that long (capped at ``max_backoff_s``) plus up to 10 % so retries spread out.
Other failures back off with full jitter; the report interval is jittered by ``interval_jitter``
and the first report can be delayed by a random ``startup_splay_s``.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
)

from agent import __version__
from agent.access.enforce import DeviceAccessConfig, DeviceAccessEnforcer
from agent.backoff import (
    CYCLE_BACKOFF_BASE_S,
    CYCLE_BACKOFF_FLOOR_S,
    REQUEST_ATTEMPTS,
    ControllerUnreachable,
    WaitRetryAfterOrFullJitter,
    apply_retry_delay_s,
    full_jitter,
    jittered_interval,
    parse_retry_after,
    retry_after_delay,
)
from agent.converge import apply_desired
from agent.health import HealthMonitor
from agent.health.rules import HealthRules
from agent.kube import KubeNodeConfig
from agent.node_inventory import node_inventory, sharing_from_document
from agent.state import AgentState, save_reported_inventory
from agent.tasks.nccl import run_nccl_test
from drivers.contract.inventory import Inventory
from drivers.contract.protocol import (
    AppliedState,
    Heartbeat,
    InventoryReport,
    RegisterRequest,
    RegisterResponse,
    ReportReply,
    Task,
    TaskResult,
    bounded_message,
    inventory_content_hash,
)
from drivers.nvml.session import open_nvml

log = logging.getLogger("gpufabric.agent")

TaskHandler = Callable[[Task], TaskResult]


class AgentError(RuntimeError):
    """The agent cannot continue without an operator (bad token, refused registration)."""


def _ping(task: Task) -> TaskResult:
    return TaskResult(status="succeeded", message="pong", output={"params": task.params})


# Task kinds this agent runs; other modules (e.g. the NCCL runner) add theirs here.
TASK_HANDLERS: dict[str, TaskHandler] = {"ping": _ping, "nccl-test": run_nccl_test}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AgentConfig:
    controller_url: str
    state_file: Path
    bootstrap_token: str | None = None
    sim: str | None = None
    sim_state: Path | None = None
    hostname: str | None = None
    interval_s: float | None = None
    backend: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    request_timeout_s: float = 10.0
    max_backoff_s: float = 60.0
    # Each wait between reports is interval * uniform(1 - j, 1 + j); 0 disables.
    interval_jitter: float = 0.1
    # ``run`` waits uniform(0, startup_splay_s) before its first cycle; 0 starts at once.
    startup_splay_s: float = 0.0
    # Verify the controller's certificate against this bundle (default: the system's).
    ca_bundle: Path | None = None
    # Health rules YAML (docs/health.md); default: the built-in rules.
    health_rules: Path | None = None
    # On a Kubernetes node: label the Node and follow nvidia.com/mig.config (agent.kube); None: not on one.
    kube: KubeNodeConfig | None = None
    # Enforce leases on the device nodes (agent.access); None: the agent leaves them as the driver made them.
    access: DeviceAccessConfig | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.interval_jitter < 1.0:
            raise ValueError(f"interval_jitter must be in [0, 1), not {self.interval_jitter}")
        if self.startup_splay_s < 0:
            raise ValueError(f"startup_splay_s must not be negative, not {self.startup_splay_s}")


class AgentRunner:
    """The agent loop. ``rng``, ``stop`` and ``clock`` are injectable so tests are deterministic.

    Every wait (retries within a request, back-off, the report interval, the start-up splay) goes
    through ``stop.wait``, so setting ``stop`` ends any of them at once.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.stop = stop or threading.Event()
        self.clock = clock
        self.hostname = config.hostname or socket.gethostname()
        self.state = AgentState.load(config.state_file)
        if self.state.controller_url != config.controller_url or self.state.hostname != self.hostname:
            # A different controller or identity: the old credential and generation mean nothing there.
            self.state = AgentState(controller_url=config.controller_url, hostname=self.hostname)
        self.client = httpx.Client(
            base_url=config.controller_url.rstrip("/"),
            timeout=config.request_timeout_s,
            transport=transport,
            verify=str(config.ca_bundle) if config.ca_bundle else True,
        )
        self.health_rules = HealthRules.from_file(config.health_rules) if config.health_rules else None
        self.report_interval_s = config.interval_s or 30.0
        self.cycles = 0
        self.last_reply: ReportReply | None = None
        self.node_sync: Any = None
        self.access = DeviceAccessEnforcer(config.access, config.state_file.parent) if config.access else None
        if config.kube is not None:
            # Imported here: a host that is not a Kubernetes node never loads the kubernetes client.
            from agent.kube.node_sync import NodeSync
            from drivers.kube import KubeNodeError

            try:
                self.node_sync = NodeSync.connect(config.kube, simulated=config.sim is not None)
            except KubeNodeError as exc:
                raise AgentError(str(exc)) from None

    # ---- HTTP -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, token: str | None, json: Any = None) -> httpx.Response:
        """Send with retries; raises ControllerUnreachable (with the last Retry-After) when they run out."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in Retrying(
            retry=retry_if_exception_type(ControllerUnreachable),
            stop=stop_after_attempt(REQUEST_ATTEMPTS) | stop_when_event_set(self.stop),
            wait=WaitRetryAfterOrFullJitter(self.rng, cap_s=self.config.max_backoff_s),
            sleep=self._pause,
            before_sleep=before_sleep_log(log, logging.INFO),
            reraise=True,
        ):
            with attempt:
                response = self._send_once(method, path, headers=headers, json=json)
        return response

    def _send_once(self, method: str, path: str, *, headers: dict[str, str], json: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, headers=headers, json=json)
        except httpx.TransportError as exc:
            raise ControllerUnreachable(f"{method} {path}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            hint = parse_retry_after(response.headers.get("Retry-After"), now=self.clock())
            after = "" if hint is None else f" (Retry-After {hint:g}s)"
            raise ControllerUnreachable(f"{method} {path}: HTTP {response.status_code}{after}", retry_after_s=hint)
        return response

    def _pause(self, seconds: float) -> None:
        self.stop.wait(seconds)

    @staticmethod
    def _problem(response: httpx.Response) -> str:
        try:
            body = response.json()
            return f"{body.get('title')}: {body.get('detail')}"
        except ValueError:
            return response.text[:200]

    def register(self) -> None:
        token = self.config.bootstrap_token
        if not token:
            raise AgentError("not registered and no bootstrap token (pass --bootstrap-token)")
        body = RegisterRequest(
            hostname=self.hostname, agent_version=__version__, backend=self.config.backend, labels=self.config.labels
        )
        response = self._request("POST", "/v1/agents/register", token=token, json=body.model_dump(mode="json"))
        if response.status_code != 201:
            raise AgentError(f"registration refused (HTTP {response.status_code}) {self._problem(response)}")
        reply = RegisterResponse.model_validate(response.json())
        self.state.credential = reply.credential
        self.state.generation = max(self.state.generation, reply.generation)
        self.state.last_reported_hash = None
        if not self.config.interval_s:
            self.report_interval_s = reply.report_interval_s
        self.state.save(self.config.state_file)
        log.info("registered as %s", self.hostname)

    def _agent_call(self, method: str, path: str, body: Any) -> httpx.Response:
        if not self.state.credential:
            self.register()
        response = self._request(method, path, token=self.state.credential, json=body)
        if response.status_code == 401 and self.config.bootstrap_token:
            log.warning("credential refused; registering again")
            self.state.credential = None
            self.register()
            response = self._request(method, path, token=self.state.credential, json=body)
        return response

    def report(self, inventory: Inventory, content_hash: str) -> ReportReply:
        for _ in range(2):
            generation = self.state.generation + 1
            body = InventoryReport(generation=generation, inventory=inventory, applied=self.state.applied)
            response = self._agent_call("PUT", f"/v1/agents/{self.hostname}/inventory", body.model_dump(mode="json"))
            if response.status_code == 409:
                current = response.json().get("current_generation")
                if isinstance(current, int):
                    log.warning("generation %d is stale; the controller has %d", generation, current)
                    self.state.generation = current
                    continue
            if response.status_code != 200:
                raise AgentError(f"report refused (HTTP {response.status_code}) {self._problem(response)}")
            reply = ReportReply.model_validate(response.json())
            self.state.generation = generation
            self.state.last_reported_hash = content_hash
            self.state.save(self.config.state_file)
            save_reported_inventory(self.config.state_file, inventory.model_dump_json())
            return reply
        raise AgentError("report refused twice as stale")

    def heartbeat(self, content_hash: str) -> ReportReply:
        body = Heartbeat(generation=self.state.generation, inventory_hash=content_hash, applied=self.state.applied)
        response = self._agent_call("POST", f"/v1/agents/{self.hostname}/heartbeat", body.model_dump(mode="json"))
        if response.status_code != 200:
            raise AgentError(f"heartbeat refused (HTTP {response.status_code}) {self._problem(response)}")
        return ReportReply.model_validate(response.json())

    def post_task_result(self, task: Task, result: TaskResult) -> None:
        response = self._agent_call(
            "POST", f"/v1/agents/{self.hostname}/tasks/{task.id}/result", result.model_dump(mode="json")
        )
        if response.status_code not in (200, 404, 409):
            raise AgentError(f"task result refused (HTTP {response.status_code}) {self._problem(response)}")
        self.state.finished_tasks = [*self.state.finished_tasks[-199:], task.id]
        self.state.save(self.config.state_file)

    # ---- one cycle --------------------------------------------------------------------------

    def _collect(self) -> tuple[Inventory, str]:
        # NVML is opened per cycle, so the monitor (and its XID event set) lives for one cycle; its
        # state file keeps sticky reasons and timestamps across cycles and restarts.
        monitor = HealthMonitor(self.health_rules, state_path=self.config.state_file.parent / "health-state.json")
        try:
            inventory = node_inventory(
                hostname=self.hostname,
                simulated=self.config.sim is not None,
                monitor=monitor,
                sharing=sharing_from_document(self.state.sharing),
            )
        finally:
            monitor.close()
        if self.access is not None:
            inventory = inventory.model_copy(update={"device_access": self.access.report()})
        return inventory, inventory_content_hash(inventory)

    def _send(self, inventory: Inventory, content_hash: str, *, force_report: bool) -> ReportReply:
        if force_report or content_hash != self.state.last_reported_hash:
            return self.report(inventory, content_hash)
        reply = self.heartbeat(content_hash)
        if reply.inventory_wanted:
            return self.report(inventory, content_hash)
        return reply

    def cycle(self) -> ReportReply:
        """Collect, report, converge if the desired state changed, run tasks. Raises on failure."""
        with open_nvml(self.config.sim, self.config.sim_state) as sim_host:
            inventory, content_hash = self._collect()
            reply = self._send(inventory, content_hash, force_report=self.cycles == 0)
            if self._should_apply(reply.desired.revision):
                retry = self.state.applied is not None and self.state.applied.revision == reply.desired.revision
                if retry:
                    log.info(
                        "trying desired state %s again (failed %d times)", reply.desired.revision,
                        self.state.apply_failures,
                    )  # fmt: skip
                else:
                    log.info("converging on desired state %s", reply.desired.revision)
                self.state.applied = self._apply(reply, sim_host, inventory)
                self.state.apply_failures = (
                    0 if self.state.applied.ok else self.state.apply_failures + 1 if retry else 1
                )
                if self.state.applied.ok:
                    self.state.sharing = reply.desired.sharing.config if reply.desired.sharing else None
                self.state.save(self.config.state_file)
                level = logging.INFO if self.state.applied.ok else logging.WARNING
                log.log(level, "applied %s: %s", reply.desired.revision, self.state.applied.message)
                if reply.desired.mig is not None or reply.desired.sharing is not None:
                    inventory, content_hash = self._collect()
                    reply = self.report(inventory, content_hash)
                else:
                    reply = self.heartbeat(content_hash)
            if self.access is not None:
                inventory, reply = self._enforce_access(reply, sim_host, inventory)
            if self.node_sync is not None:
                reply = self._sync_node(inventory, reply, sim_host)
            self._run_tasks(reply.tasks)
        if not self.config.interval_s:
            self.report_interval_s = reply.report_interval_s
        self.cycles += 1
        self.last_reply = reply
        return reply

    def _should_apply(self, revision: str) -> bool:
        """A new revision, or the same one after a failed apply once its back-off (``apply_retry_delay_s``) is
        over."""
        applied = self.state.applied
        if applied is None or applied.revision != revision:
            return True
        if applied.ok:
            return False
        waited = (self.clock() - applied.at).total_seconds()
        return waited >= apply_retry_delay_s(self.state.apply_failures)

    def _apply(self, reply: ReportReply, sim_host: Any, inventory: Inventory) -> AppliedState:
        """Converge on the reply's desired state. Never raises: a desired state this host cannot apply, for
        whatever reason, is reported as a failed apply of that revision (the admin sees it on the host) and
        the loop goes on reporting; the same revision is tried again after a back-off (1, 2, 4 ... at most 15
        minutes), a new one at once."""
        try:
            applied = apply_desired(
                reply.desired,
                sim_host=sim_host,
                state_dir=self.config.state_file.parent / "sharing",
                inventory=inventory,
            )
        except Exception as exc:
            log.exception("could not apply desired state %s", reply.desired.revision)
            applied = AppliedState(
                revision=reply.desired.revision,
                ok=False,
                message=f"could not apply: {type(exc).__name__}: {exc}",
                at=datetime.now(UTC),
            )
        return applied.model_copy(update={"message": bounded_message(applied.message)})

    def _enforce_access(self, reply: ReportReply, sim_host: Any, inventory: Inventory) -> tuple[Inventory, ReportReply]:
        """Grant the desired state's leases on the device nodes and revoke the rest; a change is reported at once
        (the controller holds a lease ``provisioning`` until its grant is reported)."""
        assert self.access is not None
        if sim_host is not None:  # the simulated driver creates its nodes as the real one does
            from drivers.nvml.sim.devnodes import materialize

            materialize(sim_host, self.access.config.dev_root, self.access.config.mig_minors_file)
        try:
            access = self.access.converge(reply.desired.leases, inventory)
        except Exception:
            log.exception("device access could not be converged")
            return inventory, reply
        if access == inventory.device_access:
            return inventory, reply
        inventory = inventory.model_copy(update={"device_access": access})
        return inventory, self.report(inventory, inventory_content_hash(inventory))

    def _sync_node(self, inventory: Inventory, reply: ReportReply, sim_host: Any) -> ReportReply:
        """Node labels and nvidia.com/mig.config (agent.kube.node_sync); a layout it changed is reported."""
        changed = self.node_sync.sync(
            inventory,
            desired=reply.desired,
            sharing=sharing_from_document(self.state.sharing),
            sim_host=sim_host,
            collect=lambda: self._collect()[0],
        )
        return reply if changed is None else self.report(changed, inventory_content_hash(changed))

    def _run_tasks(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.status != "pending" or task.id in self.state.finished_tasks:
                continue
            handler = TASK_HANDLERS.get(task.kind)
            if handler is None:
                result = TaskResult(status="failed", message=f"this agent does not run tasks of kind {task.kind!r}")
            else:
                try:
                    result = handler(task)
                except Exception as exc:
                    result = TaskResult(status="failed", message=f"{type(exc).__name__}: {exc}")
            self.post_task_result(task, result)

    # ---- loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Cycle until ``stop`` is set. Failures back off with full jitter up to ``max_backoff_s``."""
        if stop is not None:
            self.stop = stop
        self._startup_splay()
        failures = 0
        while not self.stop.is_set():
            try:
                self.cycle()
                failures = 0
                delay = jittered_interval(self.rng, self.report_interval_s, self.config.interval_jitter)
            except ControllerUnreachable as exc:
                failures += 1
                delay = self._failure_backoff(failures, exc.retry_after_s)
                log.warning("controller unreachable (%s); GPUs untouched; retrying in %.0fs", exc, delay)
            except AgentError:
                raise
            except Exception:
                failures += 1
                delay = self._failure_backoff(failures, None)
                log.exception("agent cycle failed; retrying in %.0fs", delay)
            self.stop.wait(delay)
        self.client.close()
        if self.node_sync is not None:
            self.node_sync.close()

    def _startup_splay(self) -> None:
        if self.config.startup_splay_s > 0:
            delay = self.rng.uniform(0.0, self.config.startup_splay_s)
            log.info("start-up splay: first report in %.1fs", delay)
            self.stop.wait(delay)

    def _failure_backoff(self, failures: int, retry_after_s: float | None) -> float:
        """Full jitter, at least the floor, and at least the controller's Retry-After when it gave one."""
        cap = self.config.max_backoff_s
        delay = full_jitter(
            self.rng, failures, base_s=CYCLE_BACKOFF_BASE_S, cap_s=cap, floor_s=min(CYCLE_BACKOFF_FLOOR_S, cap)
        )
        if retry_after_s is not None:
            delay = max(delay, retry_after_delay(self.rng, retry_after_s, cap_s=cap))
        return delay
