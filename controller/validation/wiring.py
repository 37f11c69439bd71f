"""Wire validation into a controller app: its periodic hooks, with the app's backends and lease service."""

from __future__ import annotations

from controller.backends.registry import BackendRegistry
from controller.jobs.hooks import HookRegistry
from controller.validation.jobs import register_validation_hooks
from controller.validation.progress import HostsChanged


def install(
    registry: HookRegistry,
    backends: BackendRegistry,
    hosts_changed: HostsChanged | None = None,
) -> None:
    """Register the app's validation hooks (once per hook registry).

    ``backends`` is the app's backend registry: it shapes nodegroup validations and runs their NCCL MPIJobs.
    ``hosts_changed`` is the app's lease service's: the scheduled reconcile tells it the hosts each verdict judged,
    so this replica's placement index honours the verdict at once. Other replicas see the verdict through the host
    change feed (``controller.store.changes``): a verdict changes the host's labels, which stamps it at commit.
    """
    if "periodic:validation-reconcile" not in registry.hooks:
        register_validation_hooks(registry, backends, hosts_changed)
