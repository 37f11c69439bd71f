"""The agent loop: register, collect, report, converge, report results — pull only.

Each cycle opens NVML, collects the inventory and reports it (or a heartbeat when nothing changed
since the last accepted report). The reply carries the desired state; when its revision differs
from what this host last applied, the agent converges (``agent.converge``) and reports again at
once. If the controller cannot be reached the GPUs are left exactly as they are and the agent
retries with exponential backoff, reporting again when the controller is back.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from agent import __version__
from agent.converge import apply_desired
from agent.health import HealthMonitor
from agent.node_inventory import node_inventory, sharing_from_document
from agent.state import AgentState
from agent.tasks.nccl import run_nccl_test
from drivers.contract.inventory import Inventory
from drivers.contract.protocol import (
    Heartbeat,
    InventoryReport,
    RegisterRequest,
    RegisterResponse,
    ReportReply,
    Task,
    TaskResult,
    inventory_content_hash,
)
from drivers.nvml.session import open_nvml

log = logging.getLogger("gpufabric.agent")

TaskHandler = Callable[[Task], TaskResult]


class AgentError(RuntimeError):
    """The agent cannot continue without an operator (bad token, refused registration)."""


class ControllerUnreachable(RuntimeError):
    """Transport error or 5xx: try again later; the GPUs are not touched."""


def _ping(task: Task) -> TaskResult:
    return TaskResult(status="succeeded", message="pong", output={"params": task.params})


# Task kinds this agent runs; other modules (e.g. the NCCL runner) add theirs here.
TASK_HANDLERS: dict[str, TaskHandler] = {"ping": _ping, "nccl-test": run_nccl_test}


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


class AgentRunner:
    def __init__(self, config: AgentConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.hostname = config.hostname or socket.gethostname()
        self.state = AgentState.load(config.state_file)
        if self.state.controller_url != config.controller_url or self.state.hostname != self.hostname:
            # A different controller or identity: the old credential and generation mean nothing there.
            self.state = AgentState(controller_url=config.controller_url, hostname=self.hostname)
        self.client = httpx.Client(
            base_url=config.controller_url.rstrip("/"), timeout=config.request_timeout_s, transport=transport
        )
        self.report_interval_s = config.interval_s or 30.0
        self.cycles = 0
        self.last_reply: ReportReply | None = None

    # ---- HTTP -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, token: str | None, json: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in Retrying(
            retry=retry_if_exception_type(ControllerUnreachable),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.25, max=2) + wait_random(0, 0.25),
            reraise=True,
        ):
            with attempt:
                try:
                    response = self.client.request(method, path, headers=headers, json=json)
                except httpx.TransportError as exc:
                    raise ControllerUnreachable(f"{method} {path}: {exc}") from exc
                if response.status_code >= 500:
                    raise ControllerUnreachable(f"{method} {path}: HTTP {response.status_code}")
        return response

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
        monitor = HealthMonitor(state_path=self.config.state_file.parent / "health-state.json")
        try:
            inventory = node_inventory(
                hostname=self.hostname,
                simulated=self.config.sim is not None,
                monitor=monitor,
                sharing=sharing_from_document(self.state.sharing),
            )
        finally:
            monitor.close()
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
            if self.state.applied is None or self.state.applied.revision != reply.desired.revision:
                log.info("converging on desired state %s", reply.desired.revision)
                self.state.applied = apply_desired(
                    reply.desired,
                    sim_host=sim_host,
                    state_dir=self.config.state_file.parent / "sharing",
                    inventory=inventory,
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
            self._run_tasks(reply.tasks)
        if not self.config.interval_s:
            self.report_interval_s = reply.report_interval_s
        self.cycles += 1
        self.last_reply = reply
        return reply

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
        """Cycle until ``stop`` is set. Controller outages back off exponentially up to ``max_backoff_s``."""
        stop = stop or threading.Event()
        failures = 0
        while not stop.is_set():
            try:
                self.cycle()
                failures = 0
                delay = self.report_interval_s
            except ControllerUnreachable as exc:
                failures += 1
                delay = min(self.config.max_backoff_s, 2.0 ** min(failures, 10))
                log.warning("controller unreachable (%s); GPUs untouched; retrying in %.0fs", exc, delay)
            except AgentError:
                raise
            except Exception:
                failures += 1
                delay = min(self.config.max_backoff_s, 2.0 ** min(failures, 10))
                log.exception("agent cycle failed; retrying in %.0fs", delay)
            stop.wait(delay)
        self.client.close()
