"""The NVIDIA k8s-device-plugin config document (``version: v1``): its models and their rules.

Shared by both sides: the controller validates every sharing config an admin sets (a host's desired state, a
pool's policy) with these models, and the agent parses what it is sent, and the files an operator hands it,
with the same ones (``agent.sharing.config`` adds YAML text, ConfigMaps and files). Validation follows the
device plugin's rules so a config that passes here is one the plugin accepts, and errors name the offending
field with the path the user wrote (``sharing.timeSlicing.resources[1].replicas``). Integers are bounded
(replicas up to :data:`MAX_REPLICAS`, device counts up to :data:`MAX_DEVICES`) and strict (``true`` is not 1).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers.contract.errors import SharingConfigError

# Replicas a device plugin advertises per GPU (or MIG device). The plugin has no limit of its own, but every
# replica is a kubelet device and a placement offer; far beyond any useful sharing ratio.
MAX_REPLICAS = 1024
# A `devices: <count>` selects the first N GPUs of a host.
MAX_DEVICES = 256

GPU_RESOURCE = "nvidia.com/gpu"
# nvidia.com/mig-<profile> with '+' written as '.', e.g. mig-1g.5gb, mig-1g.5gb.me, mig-1c.2g.10gb
_MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(?:\d+c\.)?\d+g\.\d+gb(?:\.[a-z]+)*$")
# A device reference in `devices:` — GPU index, "<gpu>:<mig>" index, or a GPU-/MIG- UUID.
_INDEX_REF = re.compile(r"^\d+$")
_MIG_INDEX_REF = re.compile(r"^\d+:\d+$")
_UUID_REF = re.compile(r"^(?:GPU-|MIG-)[0-9A-Za-z/-]+$")

SharingStrategy = Literal["none", "time-slicing", "mps"]
MigStrategy = Literal["none", "single", "mixed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def mig_resource_name(profile: str) -> str:
    """The mixed-strategy resource name of a MIG profile: ``1g.5gb+me`` -> ``nvidia.com/mig-1g.5gb.me``."""
    return f"nvidia.com/mig-{profile.replace('+', '.')}"


def is_known_resource(name: str) -> bool:
    return name == GPU_RESOURCE or bool(_MIG_RESOURCE.match(name))


# --- flags -------------------------------------------------------------------------------------


class PluginFlags(_Strict):
    pass_device_specs: bool | None = Field(default=None, alias="passDeviceSpecs")
    device_list_strategy: str | list[str] | None = Field(default=None, alias="deviceListStrategy")
    device_id_strategy: Literal["uuid", "index"] | None = Field(default=None, alias="deviceIDStrategy")
    cdi_annotation_prefix: str | None = Field(default=None, alias="cdiAnnotationPrefix")
    nvidia_ctk_path: str | None = Field(default=None, alias="nvidiaCTKPath")
    container_driver_root: str | None = Field(default=None, alias="containerDriverRoot")
    shared_devices_allocation_policy: Literal["distributed", "packed"] | None = Field(
        default=None, alias="sharedDevicesAllocationPolicy"
    )

    @field_validator("device_list_strategy")
    @classmethod
    def _known_list_strategy(cls, value: str | list[str] | None) -> str | list[str] | None:
        allowed = {"envvar", "volume-mounts", "cdi-annotations", "cdi-cri"}
        values = [value] if isinstance(value, str) else (value or [])
        for item in values:
            if item not in allowed:
                raise ValueError(f"unknown device list strategy {item!r} (one of {sorted(allowed)})")
        return value


class GfdFlags(_Strict):
    oneshot: bool | None = None
    no_timestamp: bool | None = Field(default=None, alias="noTimestamp")
    sleep_interval: str | None = Field(default=None, alias="sleepInterval")
    output_file: str | None = Field(default=None, alias="outputFile")
    machine_type_file: str | None = Field(default=None, alias="machineTypeFile")


class Flags(_Strict):
    mig_strategy: MigStrategy | None = Field(default=None, alias="migStrategy")
    fail_on_init_error: bool | None = Field(default=None, alias="failOnInitError")
    mps_root: str | None = Field(default=None, alias="mpsRoot")
    nvidia_driver_root: str | None = Field(default=None, alias="nvidiaDriverRoot")
    nvidia_dev_root: str | None = Field(default=None, alias="nvidiaDevRoot")
    gdrcopy_enabled: bool | None = Field(default=None, alias="gdrcopyEnabled")
    gds_enabled: bool | None = Field(default=None, alias="gdsEnabled")
    mofed_enabled: bool | None = Field(default=None, alias="mofedEnabled")
    use_node_feature_api: bool | None = Field(default=None, alias="useNodeFeatureAPI")
    device_discovery_strategy: str | None = Field(default=None, alias="deviceDiscoveryStrategy")
    plugin: PluginFlags | None = None
    gfd: GfdFlags | None = None


# --- resources (renaming; the plugin currently ignores it, but parses it) -----------------------


class ResourcePattern(_Strict):
    pattern: str
    name: str


class Resources(_Strict):
    gpus: list[ResourcePattern] = Field(default_factory=list)
    mig: list[ResourcePattern] = Field(default_factory=list)


class Imex(_Strict):
    channel_ids: list[int] = Field(default_factory=list, alias="channelIDs")
    required: bool | None = None


# --- sharing -----------------------------------------------------------------------------------


def _normalise_devices(value: Any) -> Any:
    """``all`` | positive count | list of refs; YAML integers in the list become index strings."""
    if isinstance(value, list):
        return [str(item) if isinstance(item, int) and not isinstance(item, bool) else item for item in value]
    return value


Devices = Annotated[Literal["all"] | StrictInt | list[str], BeforeValidator(_normalise_devices)]


class ReplicatedResource(_Strict):
    name: str
    rename: str | None = None
    devices: Devices = "all"
    replicas: StrictInt

    @field_validator("name", "rename")
    @classmethod
    def _known_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "/" in value and not is_known_resource(value):
            raise ValueError(
                f"unknown resource name {value!r}: expected {GPU_RESOURCE!r} or 'nvidia.com/mig-<profile>'"
            )
        if "/" not in value and not is_known_resource(f"nvidia.com/{value}"):
            raise ValueError(f"unknown resource name {value!r}")
        return value if "/" in value else f"nvidia.com/{value}"

    @field_validator("replicas")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"number of replicas must be >= 2 (got {value})")
        if value > MAX_REPLICAS:
            raise ValueError(f"number of replicas must be at most {MAX_REPLICAS} (got {value})")
        return value

    @field_validator("devices")
    @classmethod
    def _device_refs(cls, value: Literal["all"] | int | list[str]) -> Literal["all"] | int | list[str]:
        if isinstance(value, bool):
            raise ValueError("devices must be 'all', a positive count or a list of device references")
        if isinstance(value, int):
            if not 1 <= value <= MAX_DEVICES:
                raise ValueError(f"device count must be from 1 to {MAX_DEVICES} (got {value})")
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError("device list is empty (omit 'devices' to share all devices)")
            for ref in value:
                if not (_INDEX_REF.match(ref) or _MIG_INDEX_REF.match(ref) or _UUID_REF.match(ref)):
                    raise ValueError(
                        f"unrecognised device reference {ref!r}: expected a GPU index, "
                        "'<gpu>:<mig>' or a GPU-/MIG- UUID"
                    )
            if len(set(value)) != len(value):
                raise ValueError("device list names the same device twice")
        return value

    def matches(self, *, index: int, uuid: str, mig_index: int | None = None) -> bool:
        """Whether this resource's ``devices`` selects a GPU (or MIG device ``mig_index`` on it)."""
        if self.devices == "all":
            return True
        if isinstance(self.devices, int):
            return index < self.devices
        wanted = {str(index), uuid} if mig_index is None else {f"{index}:{mig_index}", uuid}
        return bool(wanted & set(self.devices))


class ReplicatedResources(_Strict):
    rename_by_default: bool = Field(default=False, alias="renameByDefault")
    fail_requests_greater_than_one: bool | None = Field(default=None, alias="failRequestsGreaterThanOne")
    resources: list[ReplicatedResource]

    @field_validator("resources")
    @classmethod
    def _non_empty_unique(cls, value: list[ReplicatedResource]) -> list[ReplicatedResource]:
        if not value:
            raise ValueError("no resources specified")
        seen: set[tuple[str, str]] = set()
        for resource in value:
            key = (resource.name, repr(resource.devices))
            if key in seen:
                raise ValueError(f"resource {resource.name!r} is listed twice for the same devices")
            seen.add(key)
        return value

    def resource_for(self, name: str) -> ReplicatedResource | None:
        return next((r for r in self.resources if r.name == name), None)


class Sharing(_Strict):
    time_slicing: ReplicatedResources | None = Field(default=None, alias="timeSlicing")
    mps: ReplicatedResources | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> Sharing:
        if self.time_slicing is not None and self.mps is not None:
            raise ValueError("timeSlicing and mps are mutually exclusive: configure one of them")
        if self.mps is not None:
            for i, resource in enumerate(self.mps.resources):
                if resource.name != GPU_RESOURCE:
                    raise ValueError(
                        f"mps.resources[{i}].name: MPS is only supported for {GPU_RESOURCE!r} "
                        f"(full GPUs), not {resource.name!r}"
                    )
        return self


class DevicePluginConfig(_Strict):
    version: Literal["v1"]
    flags: Flags | None = None
    resources: Resources | None = None
    sharing: Sharing | None = None
    imex: Imex | None = None

    @model_validator(mode="after")
    def _mig_rules(self) -> DevicePluginConfig:
        strategy = self.flags.mig_strategy if self.flags else None
        if self.sharing and self.sharing.mps and strategy in ("single", "mixed"):
            raise ValueError(f"flags.migStrategy: MPS sharing is not supported with MIG (migStrategy {strategy})")
        if self.sharing and self.sharing.time_slicing and strategy in ("none", "single"):
            for i, resource in enumerate(self.sharing.time_slicing.resources):
                if resource.name != GPU_RESOURCE:
                    raise ValueError(
                        f"sharing.timeSlicing.resources[{i}].name: {resource.name!r} exists only with "
                        f"migStrategy mixed (flags.migStrategy is {strategy})"
                    )
        return self

    @property
    def strategy(self) -> SharingStrategy:
        """As the device plugin resolves it: MPS wins, then time-slicing, else none."""
        if self.sharing and self.sharing.mps and any(r.replicas > 1 for r in self.sharing.mps.resources):
            return "mps"
        ts = self.sharing.time_slicing if self.sharing else None
        if ts and any(r.replicas > 1 for r in ts.resources):
            return "time-slicing"
        return "none"

    @property
    def replicated(self) -> ReplicatedResources | None:
        if self.sharing is None:
            return None
        return self.sharing.mps or self.sharing.time_slicing

    @property
    def mig_strategy(self) -> MigStrategy | None:
        return self.flags.mig_strategy if self.flags else None

    def to_yaml(self) -> str:
        """The config as the device plugin reads it (camelCase keys, unset fields left out)."""
        data = self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)
        return yaml.safe_dump(data, sort_keys=False)


# --- parsing -----------------------------------------------------------------------------------

DEFAULT_CONFIG_NAME = "default"


_NESTED_PATH = re.compile(r"^([A-Za-z][\w]*(?:\[\d+\])?(?:\.[A-Za-z]\w*(?:\[\d+\])?)*): ")


def _is_branch(item: int | str) -> bool:
    """Union branches pydantic puts into an error location (``literal['all']``, ``int``, ...)."""
    return isinstance(item, str) and item.startswith(("literal[", "int", "list[", "function-"))


def _user_loc(exc: ValidationError) -> tuple[int | str, ...]:
    """The first error's location as the user wrote it (aliases, list positions; no union branches)."""
    errors = exc.errors()
    if not errors:
        return ()
    loc = tuple(item for item in errors[0]["loc"] if not _is_branch(item))
    nested = _NESTED_PATH.match(str(errors[0]["msg"]).removeprefix("Value error, "))
    if nested:
        for part in nested.group(1).split("."):
            name, _, index = part.partition("[")
            loc = (*loc, name, *((int(index.rstrip("]")),) if index else ()))
    return loc


def _format_error(name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path = ""
        for item in err["loc"]:
            if isinstance(item, int):
                path += f"[{item}]"
            elif _is_branch(item):
                continue
            else:
                path += f".{item}" if path else str(item)
        message = err["msg"].removeprefix("Value error, ")
        nested = _NESTED_PATH.match(message)
        if nested:
            # model-level rules report their own relative field path; join it to where they ran
            path = f"{path}.{nested.group(1)}" if path else nested.group(1)
            message = message[nested.end() :]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required field is missing"
        parts.append(f"{path}: {message}" if path else message)
    unique = list(dict.fromkeys(parts))
    return f"config {name!r}: " + "; ".join(unique)


def parse_config(data: Any, name: str = DEFAULT_CONFIG_NAME) -> DevicePluginConfig:
    """Validate one config mapping; raise SharingConfigError naming the config and field."""
    if not isinstance(data, dict):
        raise SharingConfigError(f"config {name!r}: expected a mapping, got {type(data).__name__}")
    try:
        return DevicePluginConfig.model_validate(data)
    except ValidationError as exc:
        raise SharingConfigError(_format_error(name, exc), loc=_user_loc(exc)) from None
