"""Rows -> API bodies."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller.api.schemas import AppliedOut, DeviceOut, HostDetail, HostOut, MigInstanceOut, TaskOut
from controller.fleet.desired import effective_desired
from controller.store.models import AppliedStatus, Device, Host, HostTask


def device_out(device: Device, hostname: str) -> DeviceOut:
    return DeviceOut(
        uuid=device.uuid,
        host=hostname,
        index=device.index,
        model=device.model,
        memory_mib=device.memory_mib,
        health=device.health,
        admin_state=device.admin_state,
        mig_mode=device.mig_mode,
        pci_bus_id=device.pci_bus_id,
        slices=device.slices,
        mig_instances=[
            MigInstanceOut(
                gpu_instance_id=m.gpu_instance_id,
                uuid=m.uuid,
                profile=m.profile,
                placement_start=m.placement_start,
                placement_size=m.placement_size,
                memory_mib=m.memory_mib,
                busy=m.busy,
            )
            for m in device.mig_instances
        ],
    )


def host_out(host: Host) -> HostOut:
    return HostOut(**_host_fields(host))


def _host_fields(host: Host) -> dict[str, object]:
    return {
        "hostname": host.hostname,
        "backend": host.backend.name if host.backend else None,
        "pool": host.pool.name if host.pool else None,
        "status": host.status,
        "admin_state": host.admin_state,
        "health": host.health,
        "labels": host.labels,
        "agent_version": host.agent_version,
        "simulated": host.simulated,
        "registered_at": host.registered_at,
        "last_seen": host.last_seen,
        "inventory_generation": host.inventory_generation,
        "gpus": len(host.devices),
        "models": sorted({d.model for d in host.devices}),
    }


def host_detail(session: Session, host: Host) -> HostDetail:
    desired = effective_desired(session, host)
    applied_row = session.get(AppliedStatus, host.id)
    applied = (
        AppliedOut(revision=applied_row.revision, ok=applied_row.ok, message=applied_row.message, at=applied_row.at)
        if applied_row
        else None
    )
    converged = applied is not None and applied.ok and applied.revision == desired.revision
    return HostDetail(
        **_host_fields(host),  # type: ignore[arg-type]
        devices=[device_out(d, host.hostname) for d in host.devices],
        desired=desired,
        applied=applied,
        converged=converged,
        inventory=host.inventory,
    )


def task_out(task: HostTask, hostname: str) -> TaskOut:
    return TaskOut(
        id=task.id,
        kind=task.kind,
        params=task.params,
        status=task.status,  # type: ignore[arg-type]
        created_at=task.created_at,
        host=hostname,
        message=task.message,
        output=task.output,
        updated_at=task.updated_at,
    )
