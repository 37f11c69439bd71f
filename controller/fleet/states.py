"""The fleet's state machines: a host's (or GPU's) admin state, a host's reachability, an agent task's status.

Every writer of ``hosts.admin_state``, ``devices.admin_state``, ``hosts.status`` and ``tasks.status`` goes
through these tables (bulk statements filter on :meth:`StateMachine.sources` instead); docs/architecture.md
draws them.
"""

from __future__ import annotations

from typing import Literal

from controller.statemachine import StateMachine
from controller.store.models import Device, Host, HostTask

AdminState = Literal["active", "drained", "quarantined"]
HostStatus = Literal["registered", "ready", "unreachable"]
TaskStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]

# What an admin (or the validation gate, on the admin's behalf) decided about a host or one GPU. Quarantine is
# the stronger mark: a quarantined host is not drained (that would forget why it is out), only undrained.
# Setting the current state again is a no-op, as `kubectl cordon` of a cordoned node is.
ADMIN_STATE = StateMachine.of(
    "admin state",
    "active",
    ("drain", "active drained", "drained"),
    ("quarantine", "active drained quarantined", "quarantined"),
    ("undrain", "drained quarantined active", "active"),
)

# Reachability, observed: agent reports (or a backend sync seeing the node ready) make a host ready; the
# heartbeat sweeper (or a sync seeing the node gone or not ready) makes it unreachable. Nothing goes back to
# registered: that is only where a new host starts.
HOST_STATUS = StateMachine.of(
    "host status",
    "registered",
    ("report", "registered unreachable ready", "ready"),
    ("lost", "registered ready unreachable", "unreachable"),
)

# An agent task: the agent reports running and then its outcome (or the outcome at once); an admin may cancel
# one that has not finished. A finished task never changes again, so a late or repeated result is refused.
TASK_STATUS = StateMachine.of(
    "task status",
    "pending",
    ("started", "pending running", "running"),
    ("result", "pending running", "succeeded failed"),
    ("cancel", "pending running", "cancelled"),
)


def set_host_admin_state(host: Host, target: AdminState) -> bool:
    return ADMIN_STATE.move(host, "admin_state", target, f"host {host.hostname}")


def set_device_admin_state(device: Device, target: AdminState) -> bool:
    return ADMIN_STATE.move(device, "admin_state", target, f"GPU {device.uuid}")


def set_host_status(host: Host, target: HostStatus) -> bool:
    return HOST_STATUS.move(host, "status", target, f"host {host.hostname}")


def set_task_status(task: HostTask, target: TaskStatus) -> bool:
    return TASK_STATUS.move(task, "status", target, f"task {task.id}")
