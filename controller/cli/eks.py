"""`gpufabric eks ...`: AWS EKS GPU nodegroups.

`import-eksctl FILE` reads an eksctl ClusterConfig and shows its nodegroups with GPU facts. Without
`--apply` nothing changes in AWS; with `--apply` the managed nodegroups that do not exist yet are
created (`--dry-run` shows that plan instead). `--register --controller URL --token T` posts the result
as an ``eks`` backend through the admin API. Exit codes: 2 for an unreadable or invalid file, 1 when
an AWS call or the registration fails.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import httpx
import typer
from rich import box
from rich.table import Table

from controller.cli.common import console, fail
from drivers.eks import (
    AwsTarget,
    EksBackendConfig,
    EksctlConfigError,
    EksError,
    EksNodegroups,
    apply_nodegroups,
    load_eksctl,
    to_backend_config,
)

app = typer.Typer(help="AWS EKS: GPU nodegroups and eksctl import.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """AWS EKS: GPU nodegroups and eksctl import."""


@app.command("import-eksctl")
def import_eksctl(
    file: Annotated[str, typer.Argument(metavar="FILE", help="eksctl ClusterConfig (eksctl.io/v1alpha5) YAML")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --apply: show what would be created")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the nodegroups with GPU facts as JSON")] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Create the managed nodegroups that do not exist yet")] = False,
    endpoint_url: Annotated[
        str | None,
        typer.Option("--endpoint-url", envvar="GPUFABRIC_AWS_ENDPOINT_URL", help="AWS endpoint (moto in tests)"),
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="Overrides metadata.region")] = None,
    node_role: Annotated[
        str | None, typer.Option("--node-role", help="IAM role ARN for created nodegroups (else iam.instanceRoleARN)")
    ] = None,
    use_aws_facts: Annotated[
        bool,
        typer.Option(
            "--aws-facts/--builtin-facts",
            help="Instance-type facts from ec2:DescribeInstanceTypes (default when --apply or --endpoint-url) "
            "or from the built-in table",
        ),
    ] = False,
    register: Annotated[
        bool, typer.Option("--register", help="Register the cluster as an eks backend (POST /v1/backends)")
    ] = False,
    controller: Annotated[
        str | None, typer.Option("--controller", envvar="GPUFABRIC_CONTROLLER_URL", help="Controller URL")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="GPUFABRIC_TOKEN", help="Admin API token")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Backend name (default: the cluster name)")] = None,
    kube_api_url: Annotated[
        str | None, typer.Option("--kube-api-url", help="Kubernetes API URL the controller uses")
    ] = None,
    kube_token: Annotated[
        str | None, typer.Option("--kube-token", envvar="GPUFABRIC_KUBE_TOKEN", help="Bearer token for it")
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="kubeconfig path on the controller host (instead of the URL)")
    ] = None,
    kube_context: Annotated[str | None, typer.Option("--kube-context", help="Context in --kubeconfig")] = None,
    at_max: Annotated[
        str, typer.Option("--at-max", help="A lease that needs a node past maxSize: fail | wait")
    ] = "fail",
) -> None:
    """Read an eksctl ClusterConfig: nodegroups, sizes, EFA, placement, reservations, GPU facts."""
    if register and not (controller and token):
        raise fail("--register needs --controller URL and --token T (an admin token)", 2)
    if at_max not in ("fail", "wait"):
        raise fail(f"--at-max must be fail or wait, not {at_max!r}", 2)
    try:
        cluster = load_eksctl(file)
    except EksctlConfigError as exc:
        raise fail(str(exc), 2) from None
    chosen_region = region or cluster.region
    if not chosen_region:
        raise fail(f"{file}: metadata.region: is required (or pass --region)", 2)
    wants_aws = apply or use_aws_facts or endpoint_url is not None
    target = AwsTarget(region=chosen_region, endpoint_url=endpoint_url) if wants_aws else None
    try:
        ec2 = target.client("ec2") if target else None
        config = to_backend_config(cluster, ec2=ec2, region=chosen_region, endpoint_url=endpoint_url)
    except EksctlConfigError as exc:
        raise fail(f"{file}: {exc}", 2) from None
    except EksError as exc:
        raise fail(str(exc), 1) from None

    results = []
    if apply:
        assert target is not None
        roles = {ng.name: ng.instance_role_arn for ng in cluster.nodegroups}
        try:
            results = apply_nodegroups(
                config, EksNodegroups.connect(target), node_role=node_role, roles=roles, dry_run=dry_run
            )
        except EksctlConfigError as exc:
            raise fail(f"{file}: {exc}", 2) from None
        except EksError as exc:
            raise fail(str(exc), 1) from None

    registered: dict[str, object] | None = None
    if register:
        assert controller and token
        extra: dict[str, object] = {
            "kube_api_url": kube_api_url,
            "kube_token": kube_token,
            "kubeconfig": kubeconfig,
            "kube_context": kube_context,
            "at_max": at_max,
        }
        registered = _register(controller, token, name or config.cluster, config, extra)

    if as_json:
        sys.stdout.write(json.dumps(config.summary(), indent=2) + "\n")
        if registered is not None:
            sys.stderr.write(f"registered backend {registered['name']} (eks)\n")
        for result in results:
            # Keep stdout the exact JSON document; the apply log goes to stderr.
            sys.stderr.write(f"{result.nodegroup}: {result.action} {result.detail}".rstrip() + "\n")
        return
    _print_table(config)
    for result in results:
        console.print(f"{result.nodegroup}: [bold]{result.action}[/] {result.detail}", highlight=False)
    if registered is not None:
        console.print(f"registered backend [bold]{registered['name']}[/] (eks) at {controller}", highlight=False)


def _register(
    controller: str, token: str, name: str, config: EksBackendConfig, extra: dict[str, object]
) -> dict[str, object]:
    body = {
        "name": name,
        "kind": "eks",
        "config": {**config.model_dump(mode="json", exclude_none=True), **{k: v for k, v in extra.items() if v}},
    }
    try:
        response = httpx.post(
            controller.rstrip("/") + "/v1/backends",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the controller at {controller}: {exc}", 1) from None
    if response.status_code != 201:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise fail(f"registering backend {name}: {response.status_code} {detail}", 1)
    out: dict[str, object] = response.json()
    return out


def _print_table(config: EksBackendConfig) -> None:
    table = Table(title=f"{config.cluster} ({config.region})", box=box.SIMPLE_HEAVY)
    for column in ("nodegroup", "kind", "instance types", "min/desired/max", "GPUs", "EFA", "capacity", "AZs"):
        table.add_column(column)
    for ng in config.nodegroups:
        if ng.gpus_per_node is None:
            gpus = "unknown"
        elif ng.gpus_per_node == 0:
            gpus = "none"
        else:
            gpus = f"{ng.gpus_per_node} x {ng.gpu_model or 'mixed models'}"
        capacity = ng.capacity_type.lower().replace("_", "-")
        if ng.capacity_reservation_id:
            capacity += f" ({ng.capacity_reservation_id})"
        if ng.placement_group:
            capacity += f" pg={ng.placement_group}"
        table.add_row(
            ng.name,
            "managed" if ng.managed else "self-managed",
            ", ".join(ng.instance_types),
            f"{ng.min}/{ng.desired}/{ng.max}",
            gpus,
            "yes" if ng.efa else "no",
            capacity,
            ", ".join(ng.availability_zones) or "(cluster subnets)",
        )
    console.print(table)
