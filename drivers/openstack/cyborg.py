"""Cyborg (OpenStack's accelerator service) through openstacksdk's accelerator proxy: device profiles, the Nova
flavors that name them (``accel:device_profile``), accelerator requests (ARQs) and deployables.

gpufabric names its device profiles ``gpufabric-<model>-x<count>``: ``count`` request groups of one ``PGPU`` each
with the model's trait required (each GPU is its own resource provider with one ``PGPU``, so one group per GPU).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from drivers.openstack.connection import service
from drivers.openstack.errors import OpenStackCallFailed, sdk_call

OWNER_TRAIT = "OWNER_CYBORG"
RESOURCE_CLASS = "PGPU"
DEVICE_PROFILE_SPEC = "accel:device_profile"
PROFILE_PREFIX = "gpufabric"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arq(_Model):
    """One accelerator request as gpufabric reads it."""

    uuid: str
    state: str  # Initial, Bound, BindFailed, Deleting...
    device_profile_name: str
    instance_uuid: str | None = None
    hostname: str | None = None
    device_rp_uuid: str | None = None
    attach_handle_type: str | None = None
    attach_handle_info: dict[str, Any] | None = None


class Deployable(_Model):
    uuid: str
    name: str
    rp_uuid: str | None
    driver_name: str | None
    num_accelerators: int
    attributes: dict[str, str]

    @property
    def traits(self) -> list[str]:
        return [v for k, v in sorted(self.attributes.items()) if k.startswith("trait")]


def model_slug(model: str) -> str:
    """``A100-80GB`` -> ``a100-80gb`` (device profile and flavor names)."""
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


def profile_name(model: str, count: int) -> str:
    return f"{PROFILE_PREFIX}-{model_slug(model)}-x{count}"


def profile_groups(trait: str, count: int) -> list[dict[str, str]]:
    """``count`` groups of one PGPU with ``trait`` required."""
    if count < 1:
        raise ValueError("a device profile asks for at least one GPU")
    return [{f"resources:{RESOURCE_CLASS}": "1", f"trait:{trait}": "required"} for _ in range(count)]


def _attributes(raw: Any) -> dict[str, str]:
    # Cyborg answers ``attributes_list`` as a JSON string of one-key objects.
    items = json.loads(raw) if isinstance(raw, str) else (raw or [])
    out: dict[str, str] = {}
    for item in items:
        if isinstance(item, dict):
            out.update({str(k): str(v) for k, v in item.items()})
    return out


def _handle_info(raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, str) and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return {"raw": raw}
        return value if isinstance(value, dict) else {"raw": raw}
    return raw if isinstance(raw, dict) else None


class CyborgDriver:
    """The Cyborg calls gpufabric makes (admin: device profiles are created by admins)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.accelerator = service(conn, "accelerator")

    @staticmethod
    def _call(operation: str, fn: Any) -> Any:
        return sdk_call(operation, fn)

    # -- device profiles ----------------------------------------------------------------------------------

    def profiles(self) -> dict[str, Any]:
        return {p.name: p for p in self._call("device_profiles", lambda: list(self.accelerator.device_profiles()))}

    def ensure_profile(self, name: str, groups: list[dict[str, str]], known: dict[str, Any] | None = None) -> Any:
        """The device profile ``name``; made with ``groups`` if it does not exist (profiles cannot be changed)."""
        existing = (known if known is not None else self.profiles()).get(name)
        if existing is not None:
            return existing
        return self._call(
            "create_device_profile",
            lambda: self.accelerator.create_device_profile(
                name=name, groups=groups, description="made by gpufabric for its Cyborg GPU leases"
            ),
        )

    # -- accelerator requests -----------------------------------------------------------------------------

    def arqs(self, instance_uuid: str | None = None) -> list[Arq]:
        # openstacksdk's AcceleratorRequest declares no query parameters (Cyborg's ``instance`` filter would be
        # refused by the SDK): list them all and filter here.
        found = self._call("accelerator_requests", lambda: list(self.accelerator.accelerator_requests()))
        out = [
            Arq(
                uuid=str(a.uuid),
                state=str(a.state or ""),
                device_profile_name=str(a.device_profile_name or ""),
                instance_uuid=a.instance_uuid or None,
                hostname=a.hostname or None,
                device_rp_uuid=a.device_rp_uuid or None,
                attach_handle_type=a.attach_handle_type or None,
                attach_handle_info=_handle_info(a.attach_handle_info),
            )
            for a in found
        ]
        return [a for a in out if instance_uuid is None or a.instance_uuid == instance_uuid]

    def delete_arq(self, uuid: str) -> None:
        self._call("delete_accelerator_request", lambda: self.accelerator.delete_accelerator_request(uuid))

    # -- deployables --------------------------------------------------------------------------------------

    def deployables(self) -> list[Deployable]:
        # openstacksdk's Deployable drops rp_uuid, driver_name and attributes_list: read the API's own answer.
        def get() -> list[dict[str, Any]]:
            response = self.accelerator.get("/deployables")
            if response.status_code != 200:
                raise OpenStackCallFailed("deployables", response.text[:300], response.status_code)
            return list(response.json().get("deployables") or [])

        return [
            Deployable(
                uuid=str(d["uuid"]),
                name=str(d.get("name") or ""),
                rp_uuid=d.get("rp_uuid") or None,
                driver_name=d.get("driver_name") or None,
                num_accelerators=int(d.get("num_accelerators") or 0),
                attributes=_attributes(d.get("attributes_list")),
            )
            for d in self._call("deployables", get)
        ]
