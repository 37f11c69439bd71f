"""nccl-tests as a ``kubeflow.org/v2beta1`` MPIJob: generate it sized by the instance type, check it, run it.

The generated job follows the AWS EFA + NCCL recipe for EKS (aws-samples/awsome-distributed-training,
``micro-benchmarks/nccl-tests``): one worker pod per node holding all its GPUs and EFA interfaces,
``slotsPerWorker`` = GPUs per node, a launcher that runs ``mpirun -np <nodes x gpus> -N <gpus>`` with
the EFA/NCCL environment, hugepages for the EFA driver and a memory-backed ``/dev/shm`` (NCCL's
shared-memory transport needs more than the container default of 64 MiB).

``deploy/mpijob/nccl-tests.yaml`` is this generator's output for two p5.48xlarge nodes; a test keeps
the two identical.

MPIJob is a CRD, so ``kubernetes-validate`` has no schema for it: the pod templates are validated
against the core ``PodTemplate`` schema and the MPIJob structure is checked here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.eks.catalog import builtin_facts
from drivers.eks.errors import EksError, KubeError, UnknownInstanceType
from drivers.eks.nodegroups import InstanceTypeFacts

T = TypeVar("T")

MPIJOB_GROUP = "kubeflow.org"
MPIJOB_VERSION = "v2beta1"
MPIJOB_PLURAL = "mpijobs"
MPIJOB_API_VERSION = f"{MPIJOB_GROUP}/{MPIJOB_VERSION}"
# Labels the MPI operator (v2) puts on the pods it creates.
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
VALIDATION_LABEL = "gpufabric.io/validation"

DEFAULT_IMAGE = "public.ecr.aws/hpc-cloud/nccl-tests:latest"
DEFAULT_MPIRUN = "/opt/amazon/openmpi/bin/mpirun"
DEFAULT_TESTS_DIR = "/opt/nccl-tests/build"
# EFA needs hugepages for its bounce buffers; the AWS recipe asks 5 GiB per worker.
EFA_HUGEPAGES = "5120Mi"
# Worker memory request: an eighth of the instance, at most the AWS recipe's 32000Mi, at least 8 GiB.
MAX_WORKER_MEMORY_MIB = 32000
MIN_WORKER_MEMORY_MIB = 8192

NCCL_TEST_BINARIES = frozenset(
    {
        "all_reduce_perf",
        "all_gather_perf",
        "alltoall_perf",
        "broadcast_perf",
        "gather_perf",
        "hypercube_perf",
        "reduce_perf",
        "reduce_scatter_perf",
        "scatter_perf",
        "sendrecv_perf",
    }
)
_SIZE = re.compile(r"^\d+[KMGkmg]?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")

MpiJobPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class MpiJobError(EksError):
    """An MPIJob that cannot be generated (unknown instance type, bad sizes) or is malformed."""


class NcclTestArgs(BaseModel):
    """The nccl-tests command line: ``-b -e -f -g -n -w -c``."""

    model_config = ConfigDict(extra="forbid")

    test: str = "all_reduce_perf"
    min_bytes: str = "8"
    max_bytes: str = "2G"
    step_factor: int = Field(default=2, ge=2)
    iters: int = Field(default=20, ge=1)
    warmup_iters: int = Field(default=5, ge=0)
    check: int = Field(default=1, ge=0, le=1)

    def argv(self, gpus_per_process: int = 1) -> list[str]:
        for name, value in (("min_bytes", self.min_bytes), ("max_bytes", self.max_bytes)):
            if not _SIZE.match(value):
                raise MpiJobError(f"{name} {value!r} is not a size like 8, 512K, 128M or 8G")
        if self.test not in NCCL_TEST_BINARIES:
            raise MpiJobError(
                f"unknown nccl-tests binary {self.test!r} (one of {', '.join(sorted(NCCL_TEST_BINARIES))})"
            )
        return [
            "-b",
            self.min_bytes,
            "-e",
            self.max_bytes,
            "-f",
            str(self.step_factor),
            "-g",
            str(gpus_per_process),
            "-n",
            str(self.iters),
            "-w",
            str(self.warmup_iters),
            "-c",
            str(self.check),
        ]


class MpiJobSpec(BaseModel):
    """Everything the generator needs; ``gpus_per_node`` and ``efa_per_node`` default from the instance type."""

    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str = "default"
    instance_type: str
    nodes: int = Field(ge=1)
    nodegroup: str | None = None
    gpus_per_node: int | None = Field(default=None, ge=1)
    efa_per_node: int | None = Field(default=None, ge=0)
    image: str = DEFAULT_IMAGE
    mpirun: str = DEFAULT_MPIRUN
    tests_dir: str = DEFAULT_TESTS_DIR
    nccl: NcclTestArgs = Field(default_factory=NcclTestArgs)
    extra_env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    tolerate_gpu_taint: bool = True


def instance_facts(instance_type: str, facts: InstanceTypeFacts | None = None) -> InstanceTypeFacts:
    found = facts or builtin_facts(instance_type)
    if found is None:
        raise UnknownInstanceType(f"no facts for instance type {instance_type!r}; pass gpus_per_node/efa_per_node")
    return found


def efa_environment(efa_per_node: int) -> dict[str, str]:
    """EFA/NCCL variables from the AWS recipe. Without EFA, NCCL falls back to TCP sockets (no FI_*)."""
    env = {"NCCL_DEBUG": "INFO", "NCCL_BUFFSIZE": "8388608", "NCCL_P2P_NET_CHUNKSIZE": "524288"}
    if efa_per_node > 0:
        env.update({"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1"})
    return env


def worker_memory_mib(instance_memory_mib: int) -> int:
    return max(MIN_WORKER_MEMORY_MIB, min(MAX_WORKER_MEMORY_MIB, instance_memory_mib // 8))


def generate_mpijob(spec: MpiJobSpec, facts: InstanceTypeFacts | None = None) -> dict[str, Any]:
    """The MPIJob document for ``spec`` (a plain dict, ready for the CustomObjects API or YAML)."""
    if not _NAME.match(spec.name):
        raise MpiJobError(f"job name {spec.name!r} is not a DNS label of at most 53 characters")
    known = None if spec.gpus_per_node and spec.efa_per_node is not None else instance_facts(spec.instance_type, facts)
    gpus = spec.gpus_per_node or (known.gpu_count if known else 0)
    if gpus < 1:
        raise MpiJobError(f"instance type {spec.instance_type} has no GPUs")
    efa = spec.efa_per_node if spec.efa_per_node is not None else (known.max_efa_interfaces if known else 0)
    instance_memory = (known.memory_mib if known else None) or MAX_WORKER_MEMORY_MIB * 8
    env = {**efa_environment(efa), **spec.extra_env}
    labels = {"app.kubernetes.io/name": "nccl-tests", "app.kubernetes.io/managed-by": "gpufabric", **spec.labels}

    mpirun = [
        spec.mpirun,
        "--allow-run-as-root",
        "--tag-output",
        "-np",
        str(spec.nodes * gpus),
        "-N",
        str(gpus),
        "--bind-to",
        "none",
        "-x",
        "PATH",
        "-x",
        "LD_LIBRARY_PATH",
    ]
    for key in sorted(env):
        mpirun += ["-x", f"{key}={env[key]}"]
    mpirun += ["--mca", "pml", "^cm,ucx", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_exclude", "lo,docker0"]
    mpirun += [f"{spec.tests_dir.rstrip('/')}/{spec.nccl.test}", *spec.nccl.argv(1)]

    limits: dict[str, Any] = {"nvidia.com/gpu": gpus}
    if efa > 0:
        limits["vpc.amazonaws.com/efa"] = efa
        limits["hugepages-2Mi"] = EFA_HUGEPAGES
    limits["memory"] = f"{worker_memory_mib(instance_memory)}Mi"
    node_selector = {"node.kubernetes.io/instance-type": spec.instance_type}
    if spec.nodegroup:
        node_selector["eks.amazonaws.com/nodegroup"] = spec.nodegroup
    worker_pod: dict[str, Any] = {
        "containers": [
            {
                "name": "worker",
                "image": spec.image,
                "imagePullPolicy": "IfNotPresent",
                "env": [{"name": k, "value": env[k]} for k in sorted(env)],
                "resources": {"limits": dict(limits), "requests": dict(limits)},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }
        ],
        "nodeSelector": node_selector,
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if spec.tolerate_gpu_taint:
        worker_pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    launcher_pod: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "containers": [
            {
                "name": "launcher",
                "image": spec.image,
                "imagePullPolicy": "IfNotPresent",
                "command": mpirun[:1],
                "args": mpirun[1:],
                "env": [{"name": k, "value": env[k]} for k in sorted(env)],
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
            }
        ],
    }
    return {
        "apiVersion": MPIJOB_API_VERSION,
        "kind": "MPIJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "slotsPerWorker": gpus,
            "mpiImplementation": "OpenMPI",
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0},
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"metadata": {"labels": labels}, "spec": launcher_pod}},
                "Worker": {"replicas": spec.nodes, "template": {"metadata": {"labels": labels}, "spec": worker_pod}},
            },
        },
    }


def validate_mpijob(doc: dict[str, Any], kube_version: str | None = None) -> list[str]:
    """Problems with an MPIJob document (empty when it is fine).

    The MPIJob structure (CRD: no published schema) is checked here; each pod template is validated
    with ``kubernetes-validate`` as a core ``PodTemplate`` when that package is installed.
    """
    problems: list[str] = []
    if doc.get("apiVersion") != MPIJOB_API_VERSION:
        problems.append(f"apiVersion must be {MPIJOB_API_VERSION}")
    if doc.get("kind") != "MPIJob":
        problems.append("kind must be MPIJob")
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append("metadata.name must be a DNS label")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec is missing"]
    slots = spec.get("slotsPerWorker")
    if not isinstance(slots, int) or slots < 1:
        problems.append("spec.slotsPerWorker must be a positive integer")
    if spec.get("mpiImplementation", "OpenMPI") not in ("OpenMPI", "Intel", "MPICH"):
        problems.append("spec.mpiImplementation must be OpenMPI, Intel or MPICH")
    replicas = spec.get("mpiReplicaSpecs")
    if not isinstance(replicas, dict) or set(replicas) - {"Launcher", "Worker"} or "Launcher" not in replicas:
        return [*problems, "spec.mpiReplicaSpecs must hold Launcher (and Worker) only"]
    launcher_replicas = replicas["Launcher"].get("replicas", 1)
    if launcher_replicas != 1:
        problems.append("spec.mpiReplicaSpecs.Launcher.replicas must be 1")
    for role, replica in replicas.items():
        where = f"spec.mpiReplicaSpecs.{role}"
        if not isinstance(replica.get("replicas", 1), int) or replica.get("replicas", 1) < 1:
            problems.append(f"{where}.replicas must be a positive integer")
        template = replica.get("template")
        if not isinstance(template, dict) or not (template.get("spec") or {}).get("containers"):
            problems.append(f"{where}.template.spec.containers is missing")
            continue
        problems += [f"{where}.template: {p}" for p in _validate_pod_template(template, kube_version)]
    worker = replicas.get("Worker")
    if worker and isinstance(slots, int):
        limits = worker["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        gpus = limits.get("nvidia.com/gpu")
        if gpus is not None and int(gpus) != slots:
            problems.append(f"slotsPerWorker {slots} differs from the worker's nvidia.com/gpu {gpus}")
    return problems


def _validate_pod_template(template: dict[str, Any], kube_version: str | None) -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:  # a runtime install without the dev extra: the structure checks above still ran
        return []
    version = kube_version or kubernetes_validate.latest_version()
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
    try:
        kubernetes_validate.validate(wrapped, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in list(exc.path)[1:])
        return [f"{path}: {exc.message}" if path else exc.message]
    return []


# -- running it ---------------------------------------------------------------------------------


class MpiJobStatus(BaseModel):
    phase: MpiJobPhase
    message: str = ""


def job_phase(job: dict[str, Any]) -> MpiJobStatus:
    """The phase from an MPIJob's conditions (the operator sets Created, Running, Succeeded, Failed)."""
    conditions = (job.get("status") or {}).get("conditions") or []
    current = {c.get("type"): c for c in conditions if str(c.get("status")) == "True"}
    for phase in ("Failed", "Succeeded", "Running"):
        if phase in current:
            cond = current[phase]
            text = ": ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
            return MpiJobStatus(phase=phase, message=text)  # type: ignore[arg-type]
    return MpiJobStatus(phase="Pending")


class MpiJobRunner:
    """Create, watch, read and delete MPIJobs with the official ``kubernetes`` client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client as k8s

        self.api_client = api_client
        # Typed as Any: the client's generated signatures are loose (dict/object unions) for custom objects.
        self.custom: Any = k8s.CustomObjectsApi(api_client)
        self.core: Any = k8s.CoreV1Api(api_client)

    @classmethod
    def from_url(cls, host: str, token: str | None = None, verify_ssl: bool = True) -> MpiJobRunner:
        from kubernetes import client as k8s

        configuration = k8s.Configuration(host=host.rstrip("/"))
        configuration.verify_ssl = verify_ssl
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return cls(k8s.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        problems = validate_mpijob(doc)
        if problems:
            raise MpiJobError("MPIJob is not valid: " + "; ".join(problems))
        namespace = doc["metadata"].get("namespace", "default")
        created: dict[str, Any] = _call(
            f"create MPIJob {doc['metadata']['name']}",
            lambda: self.custom.create_namespaced_custom_object(
                MPIJOB_GROUP, MPIJOB_VERSION, namespace, MPIJOB_PLURAL, doc
            ),
        )
        return created

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        job: dict[str, Any] = _call(
            f"read MPIJob {name}",
            lambda: self.custom.get_namespaced_custom_object(
                MPIJOB_GROUP, MPIJOB_VERSION, namespace, MPIJOB_PLURAL, name
            ),
        )
        return job

    def status(self, namespace: str, name: str) -> MpiJobStatus:
        return job_phase(self.get(namespace, name))

    def wait(self, namespace: str, name: str, timeout_s: float = 3600.0) -> MpiJobStatus:
        """Watch the job until it succeeds or fails (or ``timeout_s`` passes: the last phase seen)."""
        from kubernetes import watch

        deadline = time.monotonic() + timeout_s
        current = self.status(namespace, name)
        while current.phase not in ("Succeeded", "Failed"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return current
            watcher = watch.Watch()
            try:
                for event in watcher.stream(
                    self.custom.list_namespaced_custom_object,
                    MPIJOB_GROUP,
                    MPIJOB_VERSION,
                    namespace,
                    MPIJOB_PLURAL,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=max(1, int(min(remaining, 30))),
                ):
                    obj = event.get("object") or {}
                    if event.get("type") == "DELETED":
                        return MpiJobStatus(phase="Failed", message="the MPIJob was deleted")
                    current = job_phase(obj)
                    if current.phase in ("Succeeded", "Failed"):
                        break
            except Exception as exc:
                from kubernetes.client.exceptions import ApiException

                if not isinstance(exc, ApiException | OSError):
                    raise
                current = self.status(namespace, name)
            finally:
                watcher.stop()
        return current

    def launcher_pod(self, namespace: str, name: str) -> str | None:
        selector = f"{JOB_NAME_LABEL}={name},{JOB_ROLE_LABEL}=launcher"
        pods = _call(
            f"list launcher pods of {name}", lambda: self.core.list_namespaced_pod(namespace, label_selector=selector)
        )
        items = sorted(pods.items, key=lambda p: p.metadata.creation_timestamp or 0)
        if items:
            pod_name: str = items[-1].metadata.name
            return pod_name
        return None

    def worker_nodes(self, namespace: str, name: str) -> list[str]:
        """The nodes the MPIJob's worker pods were scheduled on (``spec.nodeName``), sorted; [] when none is known."""
        selector = f"{JOB_NAME_LABEL}={name},{JOB_ROLE_LABEL}=worker"
        pods = _call(
            f"list worker pods of {name}", lambda: self.core.list_namespaced_pod(namespace, label_selector=selector)
        )
        return sorted({p.spec.node_name for p in pods.items if p.spec is not None and p.spec.node_name})

    def launcher_log(self, namespace: str, name: str) -> str:
        pod = self.launcher_pod(namespace, name)
        if pod is None:
            raise KubeError(f"MPIJob {name} has no launcher pod", 404, "NotFound")
        text: str = _call(
            f"read log of {pod}",
            lambda: self.core.read_namespaced_pod_log(pod, namespace, container="launcher", _preload_content=False),
        ).data.decode("utf-8", "replace")
        return text

    def delete(self, namespace: str, name: str) -> bool:
        """Delete the job (its pods go with it: the garbage collector follows owner references)."""
        try:
            _call(
                f"delete MPIJob {name}",
                lambda: self.custom.delete_namespaced_custom_object(
                    MPIJOB_GROUP, MPIJOB_VERSION, namespace, MPIJOB_PLURAL, name
                ),
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _call(what: str, fn: Callable[[], T]) -> T:
    from kubernetes.client.exceptions import ApiException

    try:
        return fn()
    except ApiException as exc:
        raise KubeError(f"{what}: {exc.status} {exc.reason}", exc.status or 0, exc.reason) from None
    except OSError as exc:
        raise KubeError(f"{what}: cannot reach the API server: {exc}") from None
