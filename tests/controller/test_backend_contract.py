"""The backend contract, checked against every kind the app serves: each declares what it hands out and does not,
with the reasons; what it does not do answers a 422 problem naming the kind and the reason through the REST API;
the kinds live in the app's registry, not in modules (importing a backend package registers nothing)."""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Any

import httpx
import pytest

import controller.backends
from controller.api.app import create_app
from controller.backends.contract import OPERATIONS, BackendBase, NotSupported
from controller.backends.registry import BackendRegistry, build_backends
from controller.backends.static.backend import StaticBackend
from controller.testing import ServerThread
from tests.controller.test_leases import create, fleet, live_claims
from tests.support.controller import Controller
from tests.support.helpers import assert_problem

_AUTH = {
    "method": "password",
    "auth_url": "http://127.0.0.1:9/v3",
    "username": "u",
    "password": "secret-pw",
    "project_name": "gpu",
}
# A valid config per kind (nothing is reached: only operations the kind does not offer are called with them).
CONFIGS: dict[str, dict[str, Any]] = {
    "static": {"region": "lab"},
    "ironic": {"auth": _AUTH, "controller_url": "http://controller.test:8080", "image_source": "http://i.test/a.qcow2"},
    "nova": {"auth": _AUTH, "controller_url": "http://controller.test:8080", "image": "gpu-image"},
    "cyborg": {
        "auth": {
            "method": "admin_token",
            "token": "t",
            "endpoints": {
                "compute": "http://nova.test/v2.1",
                "placement": "http://placement.test",
                "accelerator": "http://cyborg.test/accelerator",
            },
        },
        "controller_url": "http://controller.test:8080",
        "image": "gpu-image",
    },
    "eks": {"cluster": "train", "region": "us-east-1"},
}
# How each operation is reached through the REST API.
ROUTES: dict[str, list[tuple[str, str]]] = {
    "sync": [("POST", "/v1/backends/{name}/sync")],
    "reconcile": [("POST", "/v1/backends/{name}/reconcile"), ("GET", "/v1/backends/{name}/reconcile")],
    "checks": [("GET", "/v1/backends/{name}/checks")],
}


def test_the_app_serves_every_kind_gpufabric_ships(controller: Controller) -> None:
    backends: BackendRegistry = controller.server.app.state.backends
    assert backends.kinds() == sorted(CONFIGS)
    assert controller.server.app.state.leases.backends is backends  # the lease service provisions through it


def test_every_kind_declares_its_capabilities_with_reasons(controller: Controller) -> None:
    for backend in controller.server.app.state.backends:
        caps = backend.capabilities
        assert backend.description and backend.config_model is not None, backend.kind
        reasons = caps.reasons()
        assert all(reasons.values()), f"{backend.kind} leaves a capability unexplained: {reasons}"
        assert set(caps.unsupported) <= set(OPERATIONS), backend.kind
        for op in OPERATIONS:
            # What a kind offers, it implements; what it does not, it leaves to BackendBase's refusal.
            methods = {"sync": ["sync"], "reconcile": ["reconcile"], "checks": ["checks"]}
            for method in methods.get(op, ["nccl_cluster", "nccl_runner"]):
                overridden = getattr(type(backend), method) is not getattr(BackendBase, method)
                assert overridden == (op not in caps.unsupported), f"{backend.kind} {method}: declared vs implemented"


def test_the_kinds_and_their_reasons_are_served_over_rest(controller: Controller) -> None:
    with controller.admin() as api:
        response = api.get("/v1/backend-kinds")
        assert response.status_code == 200, response.text
        kinds = {k["kind"]: k for k in response.json()}
        with controller.client(controller.tenant_token) as tenant:
            assert_problem(tenant.get("/v1/backend-kinds"), 403, "forbidden")
    assert sorted(kinds) == sorted(CONFIGS)
    ironic = kinds["ironic"]["capabilities"]
    assert ironic["whole_node"] and ironic["whole_node_reason"] and ironic["slice_kinds"] == ["gpu"]
    assert kinds["static"]["capabilities"]["operations"]["sync"] is False
    assert "agents" in kinds["static"]["capabilities"]["unsupported"]["sync"]
    assert kinds["eks"]["config_schema"]["properties"]["cluster"]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_unsupported_operations_answer_422_with_the_kinds_reason(controller: Controller, kind: str) -> None:
    backend = controller.server.app.state.backends.get(kind)
    name = f"contract-{kind}"
    with controller.admin() as api:
        made = api.post("/v1/backends", json={"name": name, "kind": kind, "config": CONFIGS[kind]})
        assert made.status_code == 201, made.text
        refused = 0
        for op, reason in backend.capabilities.unsupported.items():
            for method, path in ROUTES.get(op, []):
                body = assert_problem(api.request(method, path.format(name=name)), 422, "not-supported")
                assert body["kind"] == kind and body["operation"] == op and body["reason"] == reason
                assert body["detail"] == f"{op} is not supported by {kind} backends: {reason}"
                refused += 1
        assert refused or not set(backend.capabilities.unsupported) & set(ROUTES)
    if "nccl" in backend.capabilities.unsupported:
        with pytest.raises(NotSupported, match=f"not supported by {kind} backends"):
            controller.server.app.state.backends.nccl_runner(kind, name)
        with pytest.raises(NotSupported, match=f"not supported by {kind} backends"):
            backend.nccl_cluster(name, "ng", "p5.48xlarge", 2)


def test_an_operation_on_a_missing_backend_is_404_before_its_kind_is_asked(controller: Controller) -> None:
    with controller.admin() as api:
        for routes in ROUTES.values():
            for method, path in routes:
                assert_problem(api.request(method, path.format(name="nope")), 404, "not-found")


def test_kinds_live_in_the_apps_registry_not_in_modules(controller: Controller) -> None:
    """An app built with only the static kind serves only it, while the other app keeps all four: nothing is
    shared through a module."""
    only_static = create_app(
        controller.settings, db=controller.db, backends=BackendRegistry([StaticBackend(controller.db)])
    )
    server = ServerThread(only_static).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {controller.admin_token}"}) as api:
            assert [k["kind"] for k in api.get("/v1/backend-kinds").json()] == ["static"]
            refused = api.post("/v1/backends", json={"name": "e", "kind": "eks", "config": CONFIGS["eks"]})
            body = assert_problem(refused, 422, "validation-error")
            assert "'eks' is not served here" in body["detail"]
    finally:
        server.stop()
    assert controller.server.app.state.backends.kinds() == sorted(CONFIGS)
    assert build_backends(controller.db, ["eks"]).kinds() == ["eks"]


def test_importing_the_backend_packages_registers_and_caches_nothing() -> None:
    """No module under controller.backends starts with an empty container or a lock: registries and caches of
    providers and connections belong to the backend objects an app's registry owns."""
    found = []
    for info in pkgutil.walk_packages(controller.backends.__path__, "controller.backends."):
        module = importlib.import_module(info.name)
        for attr, value in vars(module).items():
            if getattr(value, "__module__", module.__name__) != module.__name__:
                continue
            empty_container = isinstance(value, dict | list | set) and not value
            if empty_container or isinstance(value, type(threading.Lock())):
                found.append(f"{info.name}.{attr}")
    assert found == []


def test_hosts_of_a_kind_the_app_does_not_serve_are_refused_by_placement_with_the_reason(
    controller: Controller,
) -> None:
    """A controller started with backend_kinds ["eks"] still sees the agent-registered (static) hosts in the store,
    but places nothing on them: the capability filter says why, before any claim."""
    fleet(controller, hosts=1)
    only_eks = create_app(controller.settings, db=controller.db, backends=build_backends(controller.db, ["eks"]))
    server = ServerThread(only_eks).start()
    try:
        tenant = {"Authorization": f"Bearer {controller.tenant_token}"}
        with httpx.Client(base_url=server.url, headers=tenant) as api:
            body = assert_problem(create(api, {"slices": [{"kind": "gpu", "count": 1}]}), 409, "no-capacity")
    finally:
        server.stop()
    capability = next(f for f in body["filters"] if f["filter"] == "capability")
    assert capability["removed_hosts"] == 1
    assert "does not serve backend kind static" in capability["reasons"][0]  # a tenant: reasons, not host examples
    assert live_claims(controller) == 0
