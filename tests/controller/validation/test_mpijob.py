"""The nccl-tests MPIJob: sizing from the instance type, validation, the deploy template, and the client flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devservices.kube_emulator import KubeEmulator
from drivers.eks.errors import KubeError, UnknownInstanceType
from drivers.eks.mpijob import (
    JOB_NAME_LABEL,
    JOB_ROLE_LABEL,
    MpiJobError,
    MpiJobRunner,
    MpiJobSpec,
    NcclTestArgs,
    generate_mpijob,
    job_phase,
    validate_mpijob,
)
from drivers.nccl import parse_nccl_output

REPO = Path(__file__).resolve().parents[3]


def _parts(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str], dict[str, str]]:
    replicas = doc["spec"]["mpiReplicaSpecs"]
    worker = replicas["Worker"]["template"]["spec"]
    launcher = replicas["Launcher"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in worker["containers"][0]["env"]}
    return worker, replicas, [launcher["command"][0], *launcher["args"]], env


def test_p5_48xlarge_two_nodes() -> None:
    doc = generate_mpijob(MpiJobSpec(name="nccl-p5", instance_type="p5.48xlarge", nodes=2, nodegroup="p5-train"))
    assert doc["apiVersion"] == "kubeflow.org/v2beta1" and doc["kind"] == "MPIJob"
    worker, replicas, argv, env = _parts(doc)
    assert doc["spec"]["slotsPerWorker"] == 8
    assert replicas["Worker"]["replicas"] == 2 and replicas["Launcher"]["replicas"] == 1
    limits = worker["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 8, "vpc.amazonaws.com/efa": 32, "hugepages-2Mi": "5120Mi", "memory": "32000Mi"}
    assert worker["containers"][0]["resources"]["requests"] == limits
    assert argv[argv.index("-np") + 1] == "16" and argv[argv.index("-N") + 1] == "8"
    assert "--tag-output" in argv
    assert argv[-15:] == ["/opt/nccl-tests/build/all_reduce_perf", "-b", "8", "-e", "2G", "-f", "2", "-g", "1",
                          "-n", "20", "-w", "5", "-c", "1"]  # fmt: skip
    assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1" and env["NCCL_DEBUG"] == "INFO"
    assert "-x" in argv and "FI_PROVIDER=efa" in argv
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in worker["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in worker["containers"][0]["volumeMounts"]
    assert worker["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "p5.48xlarge",
        "eks.amazonaws.com/nodegroup": "p5-train",
    }
    assert validate_mpijob(doc) == []


def test_g6_12xlarge_four_gpus_one_efa() -> None:
    doc = generate_mpijob(MpiJobSpec(name="nccl-g6", instance_type="g6.12xlarge", nodes=3))
    worker, _, argv, env = _parts(doc)
    assert doc["spec"]["slotsPerWorker"] == 4
    limits = worker["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 4 and limits["vpc.amazonaws.com/efa"] == 1
    assert limits["memory"] == "24576Mi"  # an eighth of 192 GiB
    assert argv[argv.index("-np") + 1] == "12" and argv[argv.index("-N") + 1] == "4"
    assert env["FI_PROVIDER"] == "efa"
    assert validate_mpijob(doc) == []


def test_no_efa_no_hugepages_and_no_fi_variables() -> None:
    doc = generate_mpijob(MpiJobSpec(name="nccl-g5", instance_type="g5.2xlarge", nodes=2))
    worker, _, _, env = _parts(doc)
    limits = worker["containers"][0]["resources"]["limits"]
    assert "vpc.amazonaws.com/efa" not in limits and "hugepages-2Mi" not in limits
    assert not any(k.startswith("FI_") for k in env)


def test_generation_errors() -> None:
    with pytest.raises(UnknownInstanceType):
        generate_mpijob(MpiJobSpec(name="x", instance_type="m7i.large2", nodes=1))
    with pytest.raises(UnknownInstanceType):  # an unknown type needs both counts
        generate_mpijob(MpiJobSpec(name="x", instance_type="made-up", nodes=1, efa_per_node=0))
    with pytest.raises(MpiJobError, match="DNS label"):
        generate_mpijob(MpiJobSpec(name="Bad_Name", instance_type="p5.48xlarge", nodes=1))
    with pytest.raises(MpiJobError, match="unknown nccl-tests binary"):
        generate_mpijob(MpiJobSpec(name="x", instance_type="p5.48xlarge", nodes=1, nccl=NcclTestArgs(test="ls")))
    custom = generate_mpijob(MpiJobSpec(name="x", instance_type="custom", nodes=2, gpus_per_node=2, efa_per_node=0))
    assert custom["spec"]["slotsPerWorker"] == 2


def test_validation_catches_structure_and_pod_template_errors() -> None:
    doc = generate_mpijob(MpiJobSpec(name="nccl", instance_type="p5.48xlarge", nodes=2))
    doc["spec"]["slotsPerWorker"] = 4
    doc["spec"]["mpiReplicaSpecs"]["Launcher"]["replicas"] = 2
    doc["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    problems = validate_mpijob(doc)
    assert any("slotsPerWorker 4 differs" in p for p in problems)
    assert any("Launcher.replicas must be 1" in p for p in problems)
    assert any("volumeMount" in p and "Worker.template" in p for p in problems)
    assert validate_mpijob({"apiVersion": "v1", "kind": "Pod"}) == [
        "apiVersion must be kubeflow.org/v2beta1",
        "kind must be MPIJob",
        "metadata.name must be a DNS label",
        "spec is missing",
    ]


def test_deploy_template_is_the_generators_output() -> None:
    committed = yaml.safe_load((REPO / "deploy" / "mpijob" / "nccl-tests.yaml").read_text())
    assert committed == generate_mpijob(
        MpiJobSpec(name="nccl-tests", instance_type="p5.48xlarge", nodes=2, nodegroup="p5-train")
    )
    assert validate_mpijob(committed) == []


def test_job_phase_from_conditions() -> None:
    assert job_phase({}).phase == "Pending"
    assert job_phase({"status": {"conditions": [{"type": "Running", "status": "True"}]}}).phase == "Running"
    done = job_phase(
        {
            "status": {
                "conditions": [
                    {"type": "Running", "status": "False"},
                    {"type": "Failed", "status": "True", "reason": "Evicted", "message": "oom"},
                ]
            }
        }
    )
    assert done.phase == "Failed" and done.message == "Evicted: oom"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    yield emulator
    emulator.stop()


LOG = """[1,0]<stdout>:#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
[1,0]<stdout>:  1073741824     268435456     float     sum      -1   2900.1  370.24  694.20      0   2890.0  371.54  696.63      0
[1,0]<stdout>:  2147483648     536870912     float     sum      -1   5750.3  373.46  700.23      0   5740.1  374.12  701.48      0
[1,0]<stdout>:# Out of bounds values : 0 OK
[1,0]<stdout>:# Avg bus bandwidth    : 698.1
"""


def test_client_flow_create_watch_log_delete(kube: KubeEmulator) -> None:
    runner = MpiJobRunner.from_url(kube.url)
    doc = generate_mpijob(MpiJobSpec(name="nccl-flow", instance_type="p5.48xlarge", nodes=2))
    try:
        runner.create(doc)
        assert runner.status("default", "nccl-flow").phase == "Pending"
        with pytest.raises(KubeError) as exc:
            runner.create(doc)
        assert exc.value.status == 409

        def operator() -> None:  # what the MPI operator would do
            time.sleep(0.3)
            kube.set_mpijob_status("default", "nccl-flow", {"conditions": [{"type": "Running", "status": "True"}]})
            kube.seed(
                "pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": "nccl-flow-launcher-abcde",
                        "namespace": "default",
                        "labels": {JOB_NAME_LABEL: "nccl-flow", JOB_ROLE_LABEL: "launcher"},
                    },
                    "spec": {"containers": [{"name": "launcher", "image": "x"}]},
                },
                namespace="default",
            )
            kube.set_pod_log("default", "nccl-flow-launcher-abcde", LOG)
            time.sleep(0.3)
            kube.set_mpijob_status("default", "nccl-flow", {"conditions": [{"type": "Succeeded", "status": "True"}]})

        thread = threading.Thread(target=operator)
        thread.start()
        status = runner.wait("default", "nccl-flow", timeout_s=20)
        thread.join()
        assert status.phase == "Succeeded"
        result = parse_nccl_output(runner.launcher_log("default", "nccl-flow"))
        assert result.ok and result.avg_busbw_gbps == 698.1 and len(result.rows) == 2
        assert runner.delete("default", "nccl-flow") is True
        assert runner.delete("default", "nccl-flow") is False
        with pytest.raises(KubeError, match="no launcher pod"):
            runner.launcher_log("default", "nccl-other")
    finally:
        runner.close()
