"""Wire validation into a controller app: periodic hooks, and verdicts pushed to this replica's placement index."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from controller.backends.registry import BackendRegistry
from controller.jobs.hooks import HookRegistry
from controller.store.models import Host
from controller.validation import gate
from controller.validation.jobs import register_validation_hooks


def install(
    registry: HookRegistry,
    backends: BackendRegistry,
    hosts_changed: Callable[[Iterable[str]], Any] | None = None,
) -> None:
    """Register the validation hooks (once) and make verdicts refresh the placement index at once.

    ``backends`` is the app's backend registry: it shapes nodegroup validations and runs their NCCL MPIJobs.

    ``hosts_changed`` is the lease service's ``hosts_changed`` (a bound method, held weakly so an app that
    is gone is not kept alive by the verdict listeners). Other replicas see the verdict through the host change
    feed (``controller.store.changes``): a verdict changes the host's labels, which stamps it at commit.
    """
    if "periodic:validation-reconcile" not in registry.hooks:
        register_validation_hooks(registry, backends)
    if hosts_changed is None:
        return
    ref: Callable[[], Callable[[Iterable[str]], Any] | None]
    try:
        ref = weakref.WeakMethod(hosts_changed)  # type: ignore[arg-type]
    except TypeError:
        ref = lambda: hosts_changed  # noqa: E731 - a plain function: hold it strongly

    def listener(host: Host, _state: str, _validation: gate.EngineValidation) -> None:
        target = ref()
        if target is None:
            gate.remove_verdict_listener(listener)
            return
        target([host.hostname])

    gate.add_verdict_listener(listener)
