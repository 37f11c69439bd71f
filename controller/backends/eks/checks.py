"""Networking and capacity checks of an EKS backend, per nodegroup (``GET /v1/backends/{name}/checks``).

Per GPU nodegroup: pods per node from the type's ENIs and IPv4 addresses (and ``MAX_ENI``), subnet IP
headroom at ``maxSize`` with the VPC CNI warm pool (``vpc_cni`` in the backend config: ``WARM_ENI_TARGET``,
``WARM_IP_TARGET``, ``MINIMUM_IP_TARGET``, ``MAX_ENI``), and a warning when a multi-node lease could span
AZs. Live leases on the backend whose nodes do span AZs are listed with the same warning.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.backends.contract import LeaseDirectory
from controller.backends.eks.capacity import capacity_report, provider_for
from controller.backends.eks.cluster import aws_nodegroups, backend_config, is_headroom
from controller.store.models import Backend, Host
from drivers.eks import EksError, Finding, VpcCniSettings, builtin_facts, check_nodegroup, cross_az_finding
from drivers.eks.kube_labels import NODEGROUP_LABEL, ZONE_LABEL
from drivers.eks.network import subnet_free_ips


def backend_checks(
    session: Session, directory: LeaseDirectory, backend: Backend, pods_per_node: int | None = None
) -> dict[str, Any]:
    config = backend_config(backend.config)
    cni = VpcCniSettings.from_env({str(k): str(v) for k, v in config.vpc_cni.items()})
    out: dict[str, Any] = {"backend": backend.name, "cluster": config.cluster, "region": config.region}
    groups_out = []
    aws = None
    aws_error: str | None = None
    try:
        aws = aws_nodegroups(config)
    except Exception as exc:  # no credentials / endpoint: report, keep the offline checks
        aws_error = str(exc)
    registered: dict[str, int] = {}
    for host in session.scalars(select(Host).where(Host.backend_id == backend.id)):
        group = (host.labels or {}).get(NODEGROUP_LABEL)
        if group and not is_headroom(host):
            registered[group] = registered.get(group, 0) + 1
    provider = provider_for(config) if aws is not None else None
    for ng in config.nodegroups:
        if not ng.has_gpus:
            continue
        desired: int | None = None
        entry: dict[str, Any] = {"nodegroup": ng.name, "instance_type": ng.instance_types[0], "max": ng.max}
        findings: list[Finding] = []
        facts = None
        free_ips: int | None = None
        zones = list(ng.availability_zones)
        max_nodes = ng.max
        if aws is not None:
            try:
                info = aws.describe_nodegroup(config.cluster, ng.name)
                max_nodes = info.scaling.max
                entry.update(max=info.scaling.max, desired=info.scaling.desired, min=info.scaling.min)
                desired = info.scaling.desired
                facts = aws.instance_type_facts(info.instance_types[:1] or ng.instance_types[:1]).get(
                    (info.instance_types or ng.instance_types)[0]
                )
                subnets = subnet_free_ips(aws.ec2, info.subnets) if aws.ec2 is not None else {}
                if subnets:
                    free_ips = sum(n for _, n in subnets.values())
                    zones = sorted({az for az, _ in subnets.values()})
                    entry["subnets"] = {sid: {"az": az, "free_ips": n} for sid, (az, n) in sorted(subnets.items())}
            except EksError as exc:
                findings.append(Finding(level="error", code="aws-call-failed", message=str(exc), figures={}))
            except Exception as exc:
                findings.append(Finding(level="error", code="aws-call-failed", message=str(exc), figures={}))
        elif aws_error:
            findings.append(Finding(level="warning", code="aws-unavailable", message=aws_error, figures={}))
        if facts is None:
            facts = builtin_facts(ng.instance_types[0])
        if facts is None:
            findings.append(
                Finding(
                    level="warning",
                    code="instance-type-unknown",
                    message=f"no facts for {ng.instance_types[0]}: pods per node and IP needs not computed",
                    figures={},
                )
            )
        else:
            findings += check_nodegroup(
                facts,
                max_nodes,
                free_ips,
                zones=zones,
                cni=cni,
                pods_per_node=pods_per_node,
                efa=ng.efa,
                nodegroup=ng.name,
            )
        entry["availability_zones"] = zones
        # Reservation used / available / launching, a Capacity Block's window, the placement group's strategy.
        entry["capacity"] = capacity_report(provider, ng, desired, registered.get(ng.name, 0))
        entry["findings"] = [f.model_dump(mode="json") for f in findings]
        groups_out.append(entry)
    out["nodegroups"] = groups_out
    out["leases"] = _lease_findings(session, directory, backend)
    return out


def _lease_findings(session: Session, directory: LeaseDirectory, backend: Backend) -> list[dict[str, Any]]:
    zones = {
        h.hostname: (h.labels or {}).get(ZONE_LABEL)
        for h in session.scalars(select(Host).where(Host.backend_id == backend.id))
    }
    out = []
    for lease in directory.placed_leases("eks"):  # provisioning or ready
        hosts = [h for h in lease.hosts if h in zones]
        if not hosts:
            continue
        spans = {z for h in hosts if (z := zones[h])}
        finding = cross_az_finding(len(hosts), spans)
        if finding is not None:
            out.append({"lease": lease.id, "tenant": lease.tenant, "hosts": hosts, **finding.model_dump(mode="json")})
    return out


def backend_by_name(session: Session, name: str) -> Backend | None:
    return session.scalar(select(Backend).where(Backend.name == name))
