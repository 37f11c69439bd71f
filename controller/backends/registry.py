"""The backend kinds this controller serves, made once at application start: the app's :class:`BackendRegistry`.

``build_backends`` is the one place that names the kinds gpufabric ships; ``create_app`` calls it and keeps the
registry on ``app.state.backends``, and hands it to the lease service and the jobs. Importing a kind's package
registers nothing: a kind exists for an app only when its registry was built with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from controller.backends.contract import Backend, Capabilities, LeaseDirectory, LeaseHooks, ProvisionFailed
from controller.jobs.hooks import HookRegistry
from controller.store.db import Database
from controller.store.lease_directory import StoreLeaseDirectory


class UnknownBackendKind(ProvisionFailed, LookupError):
    """A kind this controller does not serve (a lease on it fails with this message)."""


class InvalidBackendConfig(ValueError):
    pass


class BackendRegistry:
    """The backend objects of one app, by kind."""

    def __init__(self, backends: Iterable[Backend] = ()) -> None:
        self._backends: dict[str, Backend] = {}
        for backend in backends:
            self.add(backend)

    def add(self, backend: Backend) -> Backend | None:
        """Serve ``backend`` for its kind; returns the one it replaces, if any."""
        previous = self._backends.get(backend.kind)
        self._backends[backend.kind] = backend
        return previous

    def get(self, kind: str) -> Backend:
        try:
            return self._backends[kind]
        except KeyError:
            raise UnknownBackendKind(
                f"backend kind {kind!r} is not served here (known: {', '.join(self.kinds())})"
            ) from None

    def kinds(self) -> list[str]:
        return sorted(self._backends)

    def __iter__(self) -> Iterator[Backend]:
        return iter([self._backends[k] for k in self.kinds()])

    def capabilities(self, kind: str) -> Capabilities | None:
        backend = self._backends.get(kind)
        return backend.capabilities if backend is not None else None

    def validate_config(self, kind: str, config: dict[str, Any]) -> dict[str, Any]:
        """The config as stored: valid for the kind's model, defaults filled in, ``None`` fields left out."""
        try:
            model = self.get(kind).config_model.model_validate(config)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidBackendConfig(f"{kind} config: {where}: {first['msg']}") from None
        return model.model_dump(mode="json", exclude_none=True)

    def nccl_runner(self, kind: str, name: str) -> Any:
        """The NCCL job runner of backend ``name`` (of kind ``kind``)."""
        return self.get(kind).nccl_runner(name)

    def install_jobs(self, hooks: HookRegistry, leases: LeaseHooks) -> None:
        for backend in self:
            backend.install_jobs(hooks, leases)

    def collector(self) -> Collector:
        return _BackendMetrics(self)


class _BackendMetrics(Collector):
    """Every kind's metric families at scrape time; families of the same name (ironic and nova both report
    ``gpufabric_openstack_*``) are merged."""

    def __init__(self, registry: BackendRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for backend in self.registry:
            for family in backend.metrics():
                kept = merged.setdefault(family.name, family)
                if kept is not family:
                    kept.samples.extend(family.samples)
        yield from merged.values()


# Kinds served only when named in ``backend_kinds``: ``fake`` pretends to attach vGPUs, which no production
# controller should do by default (as Ironic's fake-hardware is not enabled by default).
OPT_IN = frozenset({"fake"})


def build_backends(
    db: Database, kinds: Iterable[str] | None = None, lease_directory: LeaseDirectory | None = None
) -> BackendRegistry:
    """The kinds gpufabric ships (all but the opt-in ``fake``, or those named), each made once for this app.

    The cloud kinds get the app's one ``lease_directory`` (default: the store's, over ``db``): the only way a
    backend learns about leases and claims outside provision / release."""
    from controller.backends.cyborg.backend import CyborgBackend
    from controller.backends.eks.backend import EksBackend
    from controller.backends.fake.backend import FakeBackend
    from controller.backends.ironic.backend import IronicBackend
    from controller.backends.nova.backend import NovaBackend
    from controller.backends.openstack.common import OpenStackConnections
    from controller.backends.static.backend import StaticBackend

    connections = OpenStackConnections()  # one openstacksdk connection per distinct auth, shared by the OpenStack kinds
    directory = lease_directory if lease_directory is not None else StoreLeaseDirectory(db)
    shipped: list[Backend] = [
        StaticBackend(db),
        IronicBackend(db, connections, directory),
        NovaBackend(db, connections, directory),
        CyborgBackend(db, connections, directory),
        EksBackend(db, directory),
        FakeBackend(db),
    ]
    wanted = set(kinds) if kinds is not None else {b.kind for b in shipped} - OPT_IN
    unknown = wanted - {b.kind for b in shipped}
    if unknown:
        raise UnknownBackendKind(
            f"unknown backend kinds {sorted(unknown)} (gpufabric ships {sorted(b.kind for b in shipped)})"
        )
    return BackendRegistry(b for b in shipped if b.kind in wanted)
