"""What every cloud backend's sync does to the store's hosts: write a host's devices from documents. (Which hosts
hold live claims, which a sync never removes, the backend asks its ``LeaseDirectory``.)"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from controller.store.models import Device, Host


def digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def apply_devices(host: Host, docs: list[dict[str, Any]], now: datetime) -> str:
    """Make ``host.devices`` exactly ``docs`` (``uuid``, ``index``, ``model``, ``memory_mib``, optional ``slices``
    and ``details``): healthy, MIG off (a cloud backend's GPUs are whole, shared or vGPU). Returns their digest,
    the host's inventory hash."""
    by_uuid = {d.uuid: d for d in host.devices}
    seen = set()
    for doc in docs:
        seen.add(doc["uuid"])
        row = by_uuid.get(doc["uuid"])
        if row is None:
            row = Device(uuid=doc["uuid"], index=doc["index"], model=doc["model"], memory_mib=doc["memory_mib"])
            host.devices.append(row)
        row.index = doc["index"]
        row.model = doc["model"]
        row.memory_mib = doc["memory_mib"]
        row.health = "healthy"
        row.mig_mode = "disabled"
        row.slices = doc.get("slices", [])
        row.details = doc.get("details", {})
        row.updated_at = now
    for row in list(host.devices):
        if row.uuid not in seen:
            host.devices.remove(row)
    return digest(docs)
