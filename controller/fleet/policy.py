"""Validation of the documents admins set as policy: mig-parted configs and device-plugin sharing."""

from __future__ import annotations

from typing import Any

from drivers.contract.protocol import MigDesired, SharingDesired


class PolicyError(ValueError):
    """A MIG or sharing document is not usable."""


def validate_mig(mig: MigDesired) -> MigDesired:
    doc = mig.config
    if doc.get("version") != "v1":
        raise PolicyError("mig config: `version` must be v1 (the mig-parted format)")
    configs = doc.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise PolicyError("mig config: `mig-configs` must be a non-empty mapping of name -> device specs")
    for name, specs in configs.items():
        if not isinstance(specs, list) or not specs:
            raise PolicyError(f"mig config {name!r}: must be a non-empty list of device specs")
        for spec in specs:
            _check_device_spec(name, spec)
    if mig.selected not in configs:
        raise PolicyError(f"mig config: selected {mig.selected!r} is not one of {sorted(configs)}")
    return mig


def _check_device_spec(name: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise PolicyError(f"mig config {name!r}: each entry must be a mapping")
    if "devices" not in spec or "mig-enabled" not in spec:
        raise PolicyError(f"mig config {name!r}: each entry needs `devices` and `mig-enabled`")
    if not isinstance(spec["mig-enabled"], bool):
        raise PolicyError(f"mig config {name!r}: `mig-enabled` must be true or false")
    devices = spec.get("mig-devices", {})
    if not isinstance(devices, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in devices.items()
    ):
        raise PolicyError(f"mig config {name!r}: `mig-devices` must map profile names to counts")


def validate_sharing(sharing: SharingDesired) -> SharingDesired:
    doc = sharing.config
    if doc.get("version") != "v1":
        raise PolicyError("sharing config: `version` must be v1 (the device plugin config format)")
    section = doc.get("sharing")
    if not isinstance(section, dict) or not ({"timeSlicing", "mps"} & set(section)):
        raise PolicyError("sharing config: needs `sharing.timeSlicing` or `sharing.mps`")
    for kind in ("timeSlicing", "mps"):
        part = section.get(kind)
        if part is None:
            continue
        resources = part.get("resources") if isinstance(part, dict) else None
        if not isinstance(resources, list) or not resources:
            raise PolicyError(f"sharing config: `sharing.{kind}.resources` must be a non-empty list")
        for res in resources:
            if not isinstance(res, dict) or not isinstance(res.get("name"), str):
                raise PolicyError(f"sharing config: each `{kind}` resource needs a `name`")
            replicas = res.get("replicas")
            if not isinstance(replicas, int) or replicas < 2:
                raise PolicyError(f"sharing config: `{kind}` resource {res.get('name')!r} needs replicas >= 2")
    return sharing
