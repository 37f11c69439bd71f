"""NCCL validation end to end: the REST API, real agents running a stand-in nccl-tests binary, verdicts,
host state, placement, burn-in, cron schedules, and the EKS MPIJob flow against the Kubernetes emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.runner import AgentConfig, AgentRunner
from controller.jobs.hooks import HookRegistry, JobContext
from controller.validation import jobs, progress, wiring
from controller.validation.models import ValidationSchedule
from devservices.kube_emulator import KubeEmulator
from drivers.eks import EksNodegroupConfig
from drivers.eks.mpijob import JOB_NAME_LABEL, JOB_ROLE_LABEL
from tests.support.controller import Controller
from tests.support.helpers import assert_problem
from tests.support.nccl_standin import install_standins

AgentFactory = Callable[[str], AgentRunner]
SPEC = Path(__file__).resolve().parents[2] / "drivers" / "nvml" / "specs" / "h100-8x.yaml"


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = install_standins(tmp_path / "nccl-tests")
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", str(directory))
    monkeypatch.setenv("GPUFABRIC_MPIRUN", str(directory / "mpirun"))
    for key in ("STANDIN_PEAK_BUSBW", "STANDIN_WRONG", "STANDIN_RANKS"):
        monkeypatch.delenv(key, raising=False)
    return directory


@pytest.fixture
def agent(controller: Controller, tmp_path: Path, standins: Path) -> AgentFactory:
    """An agent on a simulated 8x H100 host; the first cycle registers it and reports its inventory."""

    def make(hostname: str) -> AgentRunner:
        # Simulated GPU UUIDs derive from the spec's hostname: one spec file per host keeps them unique.
        spec = tmp_path / hostname / "h100-8x.yaml"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(SPEC.read_text().replace("hostname: sim-h100-8x", f"hostname: {hostname}"))
        runner = AgentRunner(
            AgentConfig(
                controller_url=controller.url,
                state_file=tmp_path / hostname / "state.json",
                bootstrap_token=controller.bootstrap_token,
                sim=str(spec),
                sim_state=tmp_path / hostname / "sim.json",
                hostname=hostname,
            )
        )
        runner.cycle()
        return runner

    return make


def _start(controller: Controller, **body: Any) -> dict[str, Any]:
    with controller.admin() as api:
        response = api.post("/v1/validations", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _get(controller: Controller, path: str) -> Any:
    with controller.admin() as api:
        response = api.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def _dry_run_hosts(controller: Controller, **extra: Any) -> dict[str, Any]:
    body = {"slices": [{"kind": "gpu", "count": 1, "model": "H100"}], **extra}
    with controller.admin() as api:
        response = api.post("/v1/placements:dry-run", json=body)
    assert response.status_code in (200, 409), response.text
    data: dict[str, Any] = response.json()
    return data


def test_single_node_validation_passes_and_validates_host(controller: Controller, agent: AgentFactory) -> None:
    node = agent("val-good")
    started = _start(controller, hosts=["val-good"], max_bytes="128M")
    assert started["status"] == "pending"
    assert started["runs"][0]["expected"]["busbw_gbps"] == 360.0  # NVLink 4, conservative

    node.cycle()  # picks the nccl-test task up, runs the stand-in, uploads the log
    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == "passed", v["message"]
    run = v["runs"][0]
    assert run["status"] == "succeeded"
    assert run["command"][0].endswith("/all_reduce_perf")
    assert run["command"][1:] == ["-b", "8", "-e", "128M", "-f", "2", "-g", "8", "-n", "20", "-w", "5", "-c", "1"]
    assert run["rows"][-1]["size_bytes"] == 128 << 20
    assert run["avg_busbw_gbps"] is not None
    verdict = run["verdict"]
    assert verdict["passed"] is True
    assert verdict["measured_busbw_gbps"] > 0.8 * 360
    assert [r["size_bytes"] for r in verdict["measured_rows"]] == [128 << 20, 64 << 20]
    assert verdict["wrong_rows"] == [] and verdict["errors"] == []

    state = _get(controller, "/v1/validations/hosts/val-good")
    assert state["state"] == "validated" and state["placeable"] is True
    assert state["validation_id"] == started["id"]
    assert _get(controller, "/v1/hosts/val-good")["admin_state"] == "active"

    listed = _get(controller, "/v1/validations")
    assert [x["id"] for x in listed] == [started["id"]] and listed[0]["passed"] is True
    actions = [e["action"] for e in _get(controller, "/v1/audit")]
    assert "validation.create" in actions and "validation.verdict" in actions


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"STANDIN_PEAK_BUSBW": "150"}, "of the expected"), ({"STANDIN_WRONG": "7"}, "wrong elements")],
    ids=["low-bandwidth", "wrong-data"],
)
def test_failed_validation_quarantines_host_and_placement_skips_it(
    controller: Controller, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], reason: str
) -> None:
    good, bad = agent("val-ok"), agent("val-bad")
    before = _dry_run_hosts(controller)
    assert before.get("fits") is True

    started = _start(controller, hosts=["val-ok", "val-bad"])
    good.cycle()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bad.cycle()

    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == "failed"
    by_host = {run["hosts"][0]: run for run in v["runs"]}
    assert by_host["val-ok"]["verdict"]["passed"] is True
    assert by_host["val-bad"]["verdict"]["passed"] is False
    assert any(reason in r for r in by_host["val-bad"]["verdict"]["reasons"])
    assert reason in v["message"]

    state = _get(controller, "/v1/validations/hosts/val-bad")
    assert state["state"] == "quarantined" and state["placeable"] is False
    assert reason in state["reason"]
    assert state["evidence"]["expected_busbw_gbps"] == 360.0
    assert _get(controller, "/v1/hosts/val-bad")["admin_state"] == "quarantined"
    assert _get(controller, "/v1/validations/hosts/val-ok")["state"] == "validated"

    # Placement: the quarantined host gets nothing; with require_validated only the validated one remains.
    # (Whichever thread finalised the verdict, GET /v1/validations/{id} brought this replica's index up to date.)
    decision = _dry_run_hosts(controller, nodes=2, topology="any")
    assert decision.get("fits") is not True, decision
    assert "host-state" in json.dumps(decision)  # the refusal names the filter that removed it
    single = _dry_run_hosts(controller, require_validated=True)
    assert single["fits"] is True
    assert [n["host"] for n in single["nodes"]] == ["val-ok"]

    # A later passing validation gives the host back (the quarantine was this module's doing).
    for key in env:
        monkeypatch.delenv(key)
    again = _start(controller, hosts=["val-bad"])
    bad.cycle()
    assert _get(controller, f"/v1/validations/{again['id']}")["status"] == "passed"
    assert _get(controller, "/v1/hosts/val-bad")["admin_state"] == "active"
    assert _get(controller, "/v1/validations/hosts/val-bad")["state"] == "validated"


def test_admin_quarantine_is_not_undone_by_a_pass(controller: Controller, agent: AgentFactory) -> None:
    node = agent("val-admin")
    with controller.admin() as api:
        assert api.post("/v1/hosts/val-admin/quarantine", json={"reason": "bad PSU"}).status_code == 200
    started = _start(controller, hosts=["val-admin"])
    node.cycle()
    assert _get(controller, f"/v1/validations/{started['id']}")["status"] == "passed"
    assert _get(controller, "/v1/hosts/val-admin")["admin_state"] == "quarantined"


def test_multi_node_validation_runs_mpirun_with_a_hostfile(
    controller: Controller, agent: AgentFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "mpirun.jsonl"
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    monkeypatch.setenv("STANDIN_PEAK_BUSBW", "47")
    first, second = agent("mn-a"), agent("mn-b")
    with controller.admin() as api:
        for host in ("mn-a", "mn-b"):  # the hosts' network rate (as a label: static hosts have no instance type)
            api.put(f"/v1/hosts/{host}/pool", json={"pool": None})
    started = _start(
        controller,
        hosts=["mn-a", "mn-b"],
        mode="multi-node",
        expected_busbw_gbps=50,
        mpirun_args=["--mca", "btl", "tcp,self"],
    )
    assert len(started["runs"]) == 1 and started["runs"][0]["launcher"] == "mn-a"
    second.cycle()  # not the launcher: nothing to do
    assert _get(controller, f"/v1/validations/{started['id']}")["status"] == "pending"
    first.cycle()

    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 1
    argv = calls[0]["argv"][1:]
    assert calls[0]["hostfile"] == "mn-a slots=8\nmn-b slots=8\n"
    assert argv[:8] == ["--hostfile", argv[1], "-np", "16", "-N", "8", "--tag-output", "--bind-to"]
    assert argv[9:12] == ["--mca", "btl", "tcp,self"]
    assert argv[12].endswith("/all_reduce_perf")
    assert argv[13:] == ["-b", "8", "-e", "128M", "-f", "2", "-g", "1", "-n", "20", "-w", "5", "-c", "1"]

    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["mode"] == "multi-node" and v["status"] == "passed", v["message"]
    run = v["runs"][0]
    assert run["result"]["ranks"] == 16
    assert run["expected"]["source"] == "override in the validation request"
    for host in ("mn-a", "mn-b"):
        assert _get(controller, f"/v1/validations/hosts/{host}")["state"] == "validated"


def test_request_errors_are_problems(controller: Controller, agent: AgentFactory) -> None:
    agent("val-x")
    with controller.admin() as api:
        assert api.post("/v1/validations", json={"hosts": ["nope"]}).status_code == 404
        assert api.post("/v1/validations", json={"hosts": ["val-x"], "test": "rm_rf_perf"}).status_code == 422
        assert api.post("/v1/validations", json={"hosts": ["val-x"], "nodegroup": "ng"}).status_code == 422
        response = api.post("/v1/validations", json={"hosts": ["val-x"], "mode": "multi-node"})
        assert response.status_code == 422 and "two hosts" in response.json()["detail"]
        assert api.get("/v1/validations/does-not-exist").status_code == 404
    with controller.client(controller.tenant_token) as tenant:
        assert tenant.post("/v1/validations", json={"hosts": ["val-x"]}).status_code == 403


def test_missing_binary_is_an_error_not_a_quarantine(
    controller: Controller, agent: AgentFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    node = agent("val-nobin")
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", str(tmp_path / "empty"))
    started = _start(controller, hosts=["val-nobin"])
    node.cycle()
    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == "error"
    assert "not found" in v["runs"][0]["verdict"]["reasons"][0]
    assert _get(controller, "/v1/validations/hosts/val-nobin")["state"] == "unvalidated"
    assert _get(controller, "/v1/hosts/val-nobin")["admin_state"] == "active"


def test_pool_policy_overrides_expected_bandwidth(controller: Controller, agent: AgentFactory) -> None:
    node = agent("val-pool")
    with controller.admin() as api:
        assert api.post("/v1/pools", json={"name": "slow"}).status_code == 201
        assert api.put("/v1/hosts/val-pool/pool", json={"pool": "slow"}).status_code == 200
        response = api.put("/v1/validations/policies/pool:slow", json={"expected_busbw_gbps": 1000, "pass_ratio": 0.9})
        assert response.status_code == 200, response.text
        assert api.put("/v1/validations/policies/pool:nope", json={}).status_code == 404
    started = _start(controller, hosts=["val-pool"])
    assert started["runs"][0]["expected"] == {"busbw_gbps": 1000, "source": "policy pool:slow", "pass_ratio": 0.9}
    node.cycle()
    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == "failed" and "needs 90%" in v["message"]


def test_burn_in_holds_a_new_host_until_its_validation_passes(
    controller: Controller, agent: AgentFactory, tmp_path: Path
) -> None:
    existing = agent("old-host")
    with controller.admin() as api:
        response = api.put(
            "/v1/validations/policies/global", json={"burn_in": True, "burn_in_request": {"max_bytes": "64M"}}
        )
        assert response.status_code == 200, response.text
        assert response.json()["burn_in_since"] is not None
    new = agent("new-host")
    assert _get(controller, "/v1/validations/hosts/new-host")["state"] == "held"  # before any job ran

    started = jobs.burn_in_tick(controller.db)
    assert len(started) == 1
    held = _get(controller, "/v1/validations/hosts/new-host")
    assert held["state"] == "held" and held["placeable"] is False
    assert _get(controller, "/v1/hosts/new-host")["admin_state"] == "drained"
    assert _get(controller, "/v1/validations/hosts/old-host")["state"] == "unvalidated"  # registered before
    assert jobs.burn_in_tick(controller.db) == []  # one burn-in per host

    existing.cycle()
    new.cycle()
    v = _get(controller, f"/v1/validations/{started[0]}")
    assert v["purpose"] == "burn-in" and v["status"] == "passed", v["message"]
    assert v["request"]["max_bytes"] == "64M"
    assert _get(controller, "/v1/hosts/new-host")["admin_state"] == "active"
    assert _get(controller, "/v1/validations/hosts/new-host")["state"] == "validated"


def test_cron_schedule_starts_validations_when_due(controller: Controller, agent: AgentFactory) -> None:
    node = agent("val-cron")
    with controller.admin() as api:
        bad = api.post(
            "/v1/validations/schedules", json={"name": "x", "cron": "not cron", "request": {"hosts": ["val-cron"]}}
        )
        assert bad.status_code == 422
        response = api.post(
            "/v1/validations/schedules",
            json={"name": "weekly", "cron": "0 3 * * 0", "request": {"hosts": ["val-cron"], "test": "all_gather_perf"}},
        )
        assert response.status_code == 201, response.text
        schedule = response.json()
        assert schedule["next_run_at"] is not None
        assert datetime.fromisoformat(schedule["next_run_at"]).weekday() == 6  # Sunday 03:00 UTC
    # The hook is on the app's registry (runs on the leader replica).
    assert "periodic:validation-schedules" in controller.server.app.state.hooks.hooks

    assert jobs.fire_due_schedules(controller.db) == []  # not due yet
    later = datetime.now(UTC) + timedelta(days=8)
    fired = jobs.fire_due_schedules(controller.db, now=later)
    assert len(fired) == 1
    assert jobs.fire_due_schedules(controller.db, now=later) == []  # fired once per due time
    with controller.db.session() as session:
        row = session.query(ValidationSchedule).one()
        assert row.last_validation_id == fired[0]
    node.cycle()
    v = _get(controller, f"/v1/validations/{fired[0]}")
    assert v["purpose"] == "scheduled" and v["request"]["test"] == "all_gather_perf"
    assert v["status"] == "passed", v["message"]


# -- EKS: the MPIJob flow against the Kubernetes emulator ---------------------------------------------------


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    yield emulator
    emulator.stop()


def _launcher_pod(kube: KubeEmulator, namespace: str, job: str, log: str) -> None:
    kube.seed(
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-launcher-x7k2p",
                "namespace": namespace,
                "labels": {JOB_NAME_LABEL: job, JOB_ROLE_LABEL: "launcher"},
            },
            "spec": {"containers": [{"name": "launcher", "image": "nccl-tests"}]},
            "status": {"phase": "Succeeded"},
        },
        namespace=namespace,
    )
    kube.set_pod_log(namespace, f"{job}-launcher-x7k2p", log)


def _g6_log(busbw: float) -> str:
    """A 2 x g6.12xlarge all_reduce over EFA as the launcher prints it (mpirun --tag-output)."""
    lines = [
        "# nThread 1 nGpus 1 minBytes 8 maxBytes 2147483648 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0",
        "#",
        "#                                                              out-of-place                       in-place          ",
        "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong",
    ]
    for size, bw in ((268435456, busbw * 0.97), (536870912, busbw * 0.99), (1073741824, busbw), (2147483648, busbw)):
        algbw = bw / (2 * 7 / 8)
        t = size / (algbw * 1e3)
        lines.append(
            f"{size:12d} {size // 4:12d}     float     sum      -1 {t:8.1f} {algbw:6.2f} {bw:6.2f}      0 {t:8.1f} {algbw:6.2f} {bw:6.2f}      0"
        )
    lines += ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {busbw * 0.6:.3f} ", "#"]
    return "\n".join(f"[1,0]<stdout>:{line}" for line in lines) + "\n"


@pytest.mark.parametrize(("busbw", "status"), [(4.93, "passed"), (2.1, "failed")])
def test_eks_nodegroup_validation_runs_an_mpijob(
    controller: Controller, kube: KubeEmulator, busbw: float, status: str
) -> None:
    kube.seed("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nccl"}})
    config = {
        "cluster": "fabric-train",
        "region": "us-east-1",
        "kube_api_url": kube.url,
        "nodegroups": [
            EksNodegroupConfig(
                name="l4-train",
                managed=True,
                instance_types=["g6.12xlarge"],
                min=0,
                max=4,
                desired=2,
                efa=True,
                gpus_per_node=4,
                gpu_model="L4",
            ).model_dump(mode="json")
        ],
    }
    with controller.admin() as api:
        response = api.post("/v1/backends", json={"name": "eks-train", "kind": "eks", "config": config})
        assert response.status_code == 201, response.text
    started = _start(controller, nodegroup="l4-train", backend="eks-train", namespace="nccl", max_bytes="2G")
    assert started["runner"] == "eks" and started["status"] == "running"
    run = started["runs"][0]
    assert run["expected"]["busbw_gbps"] == 5.0 and "40 Gbps / 8" in run["expected"]["source"]
    job_name = run["job"].split("/")[1]
    job = kube.get("mpijobs", job_name, group="kubeflow.org", namespace="nccl")
    assert job["spec"]["slotsPerWorker"] == 4
    assert job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] == 2
    assert job["metadata"]["labels"]["gpufabric.io/validation"] == started["id"]

    kube.set_mpijob_status("nccl", job_name, {"conditions": [{"type": "Running", "status": "True"}]})
    assert _get(controller, f"/v1/validations/{started['id']}")["status"] == "running"

    _launcher_pod(kube, "nccl", job_name, _g6_log(busbw))
    kube.set_mpijob_status(
        "nccl",
        job_name,
        {
            "conditions": [
                {"type": "Running", "status": "False"},
                {"type": "Succeeded", "status": "True", "reason": "MPIJobSucceeded"},
            ]
        },
    )
    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == status, v["message"]
    verdict = v["runs"][0]["verdict"]
    assert verdict["measured_busbw_gbps"] == pytest.approx(busbw, abs=0.01)
    assert verdict["expected_busbw_gbps"] == 5.0
    assert len(v["runs"][0]["rows"]) == 4
    assert kube.list_objects("mpijobs", group="kubeflow.org", namespace="nccl") == []  # cleaned up


def test_eks_validation_failed_job_is_judged_failed(controller: Controller, kube: KubeEmulator) -> None:
    config = {"cluster": "c", "region": "us-east-1", "kube_api_url": kube.url}
    with controller.admin() as api:
        assert api.post("/v1/backends", json={"name": "eks-p5", "kind": "eks", "config": config}).status_code == 201
    started = _start(controller, nodegroup="p5", backend="eks-p5", instance_type="p5.48xlarge", nodes=2)
    assert started["runs"][0]["expected"]["busbw_gbps"] == 400.0
    job_name = started["runs"][0]["job"].split("/")[1]
    job = kube.get("mpijobs", job_name, group="kubeflow.org", namespace="default")
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["vpc.amazonaws.com/efa"] == 32
    _launcher_pod(
        kube, "default", job_name, "[1,0]<stderr>:p5-0: Test NCCL failure common.cu:1005 'unhandled system error'\n"
    )
    kube.set_mpijob_status(
        "default", job_name, {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    )
    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == "failed"
    assert "BackoffLimitExceeded" in v["runs"][0]["message"]


def test_eks_validation_reaches_a_cluster_given_by_kubeconfig(
    controller: Controller, kube: KubeEmulator, tmp_path: Path
) -> None:
    """The MPIJob runner is the backend's: it reaches the cluster through whatever access the config gives (here a
    kubeconfig file), not only a ``kube_api_url``."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "train", "cluster": {"server": kube.url}}],
                "users": [{"name": "admin", "user": {}}],
                "contexts": [{"name": "train", "context": {"cluster": "train", "user": "admin"}}],
                "current-context": "train",
            }
        )
    )
    config = {"cluster": "c", "region": "us-east-1", "kubeconfig": str(kubeconfig)}
    with controller.admin() as api:
        assert api.post("/v1/backends", json={"name": "eks-kc", "kind": "eks", "config": config}).status_code == 201
    started = _start(controller, nodegroup="p5", backend="eks-kc", instance_type="p5.48xlarge", nodes=2)
    assert started["status"] == "running", started
    job_name = started["runs"][0]["job"].split("/")[1]
    assert kube.get("mpijobs", job_name, group="kubeflow.org", namespace="default")["spec"]["slotsPerWorker"] == 8


def test_nodegroup_validation_on_a_kind_without_clusters_is_refused_with_its_reason(controller: Controller) -> None:
    with controller.admin() as api:
        made = api.post("/v1/backends", json={"name": "racks", "kind": "static", "config": {}})
        assert made.status_code == 201, made.text
        reason = controller.server.app.state.backends.get("static").capabilities.unsupported["nccl"]
        body = assert_problem(
            api.post("/v1/validations", json={"backend": "racks", "nodegroup": "ng", "instance_type": "p5.48xlarge"}),
            422,
            "validation-error",
        )
        assert reason in body["detail"] and "validate its hosts instead" in body["detail"], body
        assert api.get("/v1/validations").json() == []
        missing = api.post("/v1/validations", json={"backend": "nope", "nodegroup": "ng"})
        assert_problem(missing, 404, "not-found")


def test_the_scheduled_reconcile_tells_the_apps_lease_service_which_hosts_a_verdict_judged(
    controller: Controller, agent: AgentFactory
) -> None:
    """Verdicts reach this replica's placement index through the app's own ``hosts_changed`` (no process-wide
    listener list: two apps in one process do not hear each other's verdicts)."""
    node = agent("val-hook")
    started = _start(controller, hosts=["val-hook"])
    node.cycle()  # the agent ran the test and reported its result; nothing has judged it yet
    heard: list[list[str]] = []
    others: list[list[str]] = []
    hooks, elsewhere = HookRegistry(), HookRegistry()
    wiring.install(hooks, controller.server.app.state.backends, lambda names: heard.append(sorted(names)))
    wiring.install(elsewhere, controller.server.app.state.backends, lambda names: others.append(sorted(names)))
    context = JobContext(db=controller.db, settings=controller.server.app.state.settings)
    hooks.hooks["periodic:validation-reconcile"].run(context)
    assert heard == [["val-hook"]] and others == []
    assert _get(controller, f"/v1/validations/{started['id']}")["status"] == "passed"
    hooks.hooks["periodic:validation-reconcile"].run(context)  # nothing left to judge: nothing to tell
    assert heard == [["val-hook"]]


def test_reconcile_hook_is_registered(controller: Controller) -> None:
    hooks = controller.server.app.state.hooks.hooks
    assert {"periodic:validation-reconcile", "periodic:validation-burn-in"} <= set(hooks)
    assert progress.reconcile(controller.db, mpi_runner=controller.server.app.state.backends.nccl_runner) == []


def test_cli_run_wait_and_show(controller: Controller, agent: AgentFactory) -> None:
    import threading

    from typer.testing import CliRunner

    from controller.cli import app

    node = agent("cli-host")
    cli = CliRunner()
    common = ["--controller", controller.url, "--token", controller.admin_token]

    # The agent keeps cycling (as its loop would) until the CLI has its verdict: one cycle at a fixed delay
    # could run before the validation exists on a slow machine, leaving the CLI waiting for its timeout.
    done = threading.Event()

    def agent_loop() -> None:
        while not done.wait(0.3):
            node.cycle()

    loop = threading.Thread(target=agent_loop, daemon=True)
    loop.start()
    try:
        result = cli.invoke(
            app,
            [
                "validate",
                "run",
                "--hosts",
                "cli-host",
                "--wait",
                "--interval",
                "0.2",
                "--timeout",
                "300",
                "--json",
                *common,
            ],
        )
    finally:
        done.set()
        loop.join()
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "passed"

    shown = cli.invoke(app, ["validate", "show", data["id"], *common])
    assert shown.exit_code == 0, shown.output
    assert "PASSED" in shown.output and "largest sizes" in shown.output
    listed = cli.invoke(app, ["validate", "list", *common], env={"COLUMNS": "200"})
    assert data["id"] in listed.output

    refused = cli.invoke(app, ["validate", "run", "--hosts", "nope", *common])
    assert refused.exit_code == 2 and "unknown host(s): nope" in refused.output


def test_an_eks_verdict_touches_only_the_nodes_its_workers_ran_on(controller: Controller, kube: KubeEmulator) -> None:
    """The bug: a nodegroup's verdict was applied to every node of the nodegroup, even when the MPIJob ran on
    fewer. Three nodes in the nodegroup, a 2-node job whose workers land on two of them: the third is untouched."""
    import httpx

    from drivers.contract.protocol import RegisterRequest

    kube.seed("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nccl"}})
    config = {"cluster": "fabric-train", "region": "us-east-1", "kube_api_url": kube.url}
    with controller.admin() as api:
        assert api.post("/v1/backends", json={"name": "eks-train", "kind": "eks", "config": config}).status_code == 201
    nodes = [f"ip-10-0-0-{i}.ec2.internal" for i in range(3)]
    with httpx.Client(base_url=controller.url, headers={"Authorization": f"Bearer {controller.bootstrap_token}"}) as c:
        for node in nodes:
            body = RegisterRequest(
                hostname=node, agent_version="test", backend="eks-train",
                labels={"eks.amazonaws.com/nodegroup": "l4-train"},
            ).model_dump(mode="json")  # fmt: skip
            assert c.post("/v1/agents/register", json=body).status_code == 201
    started = _start(
        controller, nodegroup="l4-train", backend="eks-train", namespace="nccl", instance_type="g6.12xlarge", nodes=2
    )
    assert started["runs"][0]["hosts"] == sorted(nodes)
    job_name = started["runs"][0]["job"].split("/")[1]
    for i, node in enumerate(nodes[:2]):
        kube.seed(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{job_name}-worker-{i}",
                    "labels": {JOB_NAME_LABEL: job_name, JOB_ROLE_LABEL: "worker"},
                },
                "spec": {"nodeName": node, "containers": [{"name": "worker", "image": "nccl-tests"}]},
            },
            namespace="nccl",
        )
    _launcher_pod(kube, "nccl", job_name, _g6_log(6.0))
    kube.set_mpijob_status("nccl", job_name, {"conditions": [{"type": "Succeeded", "status": "True"}]})
    v = _get(controller, f"/v1/validations/{started['id']}")
    assert v["status"] == "passed", v
    assert v["runs"][0]["hosts"] == sorted(nodes[:2])
    labels = {n: _get(controller, f"/v1/hosts/{n}")["labels"].get("gpufabric.dev/validation") for n in nodes}
    assert labels == {nodes[0]: "validated", nodes[1]: "validated", nodes[2]: None}, labels
