"""The NVIDIA mig-parted config document (``version: v1`` + ``mig-configs``): its models and their rules.

Shared by both sides: the controller validates every MIG layout an admin sets (a host's desired state, a
pool's policy) with these models, and the agent parses what it is sent, and the files an operator hands it,
with the same ones (``agent.mig.config`` adds YAML text, ConfigMaps and files). So nothing the controller
accepts is refused by the agent's parser.

Unknown keys are refused, as mig-parted itself does, and every error names the config, the entry and the
field. Beyond mig-parted's own rules, counts are bounded by what any GPU can hold (no NVIDIA GPU has more
than :data:`MAX_MIG_INSTANCES_PER_GPU` GPU instances), so an absurd integer is a validation error here and
never reaches arithmetic or allocation further on.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from drivers.contract.errors import MigConfigError

SUPPORTED_VERSION = "v1"
# NVIDIA's MIG user guide: "up to seven instances" per GPU (A100, A30 with 4, H100, H200, B200 ...).
# tests/agent/mig/test_contract_limits.py checks the GPU catalog never exceeds it.
MAX_MIG_INSTANCES_PER_GPU = 7
# GPU indexes are small: NVML numbers the GPUs of one host from 0; no host has anywhere near this many.
MAX_GPU_INDEX = 255
# The longest name in the GPU catalog has 13 characters (1c.2g.12gb+me); the store keeps 32.
MAX_PROFILE_NAME = 32
PCI_ID_PATTERN = re.compile(r"^0x[0-9a-fA-F]{8}$")
# [<C>c.]<G>g.<GB>gb[+attr[,attr...]] or -attr; attributes as go-nvlib knows them.
PROFILE_PATTERN = re.compile(
    r"^(?:(?P<c>[1-9][0-9]*)c\.)?(?P<g>[1-9][0-9]*)g\.(?P<gb>[0-9]+)gb(?P<attrs>[+-][a-z.]+(?:,[a-z.]+)*)?$"
)
PROFILE_ATTRIBUTES = {"me", "me.all", "gfx"}

GpuIndex = Annotated[StrictInt, Field(ge=0, le=MAX_GPU_INDEX)]
InstanceCount = Annotated[StrictInt, Field(ge=0, le=MAX_MIG_INSTANCES_PER_GPU)]


def check_profile_name(name: str) -> str:
    """Return ``name`` if it follows mig-parted's profile grammar, else raise ``ValueError``."""
    if len(name) > MAX_PROFILE_NAME:
        raise ValueError(f"profile name {name[:40]!r}... is longer than {MAX_PROFILE_NAME} characters")
    match = PROFILE_PATTERN.match(name)
    if not match:
        raise ValueError(f"profile {name!r} is not a MIG profile name like '1g.5gb', '1g.5gb+me' or '1c.3g.20gb'")
    attrs = match.group("attrs")
    if attrs:
        unknown = [a for a in attrs[1:].split(",") if a not in PROFILE_ATTRIBUTES]
        if unknown:
            raise ValueError(f"profile {name!r} has unknown attribute(s) {', '.join(unknown)}")
    return name


def is_compute_instance_profile(name: str) -> bool:
    """``1c.3g.20gb``-style names ask for compute instances smaller than their GPU instance."""
    match = PROFILE_PATTERN.match(name)
    return bool(match and match.group("c") and match.group("c") != match.group("g"))


def normalise_pci_id(value: str) -> str:
    """``0x20b010de`` -> ``0x20B010DE`` (nvmlPciInfo_t.pciDeviceId printed as mig-parted expects)."""
    return "0x" + value[2:].upper()


ProfileName = Annotated[str, AfterValidator(check_profile_name)]


class MigConfigEntry(BaseModel):
    """One device group of a mig-parted config (mig-parted calls it a MigConfigSpec)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    devices: Literal["all"] | list[GpuIndex]
    device_filter: list[str] | None = Field(default=None, alias="device-filter")
    mig_enabled: StrictBool = Field(alias="mig-enabled")
    mig_devices: dict[ProfileName, InstanceCount] = Field(default_factory=dict, alias="mig-devices")

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must be 'all' or a non-empty list of GPU indexes")
            if len(set(value)) != len(value):
                raise ValueError(f"GPU index listed twice in {value}")
        return value

    @field_validator("device_filter", mode="before")
    @classmethod
    def _device_filter(cls, value: Any) -> Any:
        # An unquoted 0x20B010DE is a YAML integer; mig-parted (Go) would still read it as the id.
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list):
            value = [
                f"0x{v:08X}" if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 else v for v in value
            ]
            for item in value:
                if not isinstance(item, str) or not PCI_ID_PATTERN.match(item):
                    raise ValueError(f"{item!r:.40} is not a PCI device id like '0x20B010DE'")
            return [normalise_pci_id(item) for item in value]
        return value

    @field_validator("mig_devices", mode="before")
    @classmethod
    def _mig_devices_none(cls, value: Any) -> Any:
        # `mig-devices:` with nothing after it is YAML null; mig-parted reads that as empty.
        return {} if value is None else value

    @field_validator("mig_devices")
    @classmethod
    def _mig_devices(cls, value: dict[str, int]) -> dict[str, int]:
        total = sum(value.values())
        if total > MAX_MIG_INSTANCES_PER_GPU:
            raise ValueError(f"{total} instances requested per GPU; no GPU holds more than {MAX_MIG_INSTANCES_PER_GPU}")
        return value

    def selects(self, index: int, pci_device_id: str) -> bool:
        """Whether this entry applies to the GPU at ``index`` with that PCI device id."""
        if self.devices != "all" and index not in self.devices:
            return False
        return self.device_filter is None or normalise_pci_id(pci_device_id) in self.device_filter

    def describe(self) -> str:
        devices = "all" if self.devices == "all" else "[" + ",".join(str(i) for i in self.devices) + "]"
        text = f"devices {devices}"
        if self.device_filter:
            text += f" filter {','.join(self.device_filter)}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices if self.devices == "all" else list(self.devices),
            "device_filter": list(self.device_filter) if self.device_filter is not None else None,
            "mig_enabled": self.mig_enabled,
            "mig_devices": dict(self.mig_devices),
        }


class MigPartedConfig(BaseModel):
    """Every named config found in one file, in file order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = SUPPORTED_VERSION
    configs: dict[str, list[MigConfigEntry]]
    source: str = Field(default="<text>", description="Where the configs were read from (for messages)")

    def select(self, name: str) -> list[MigConfigEntry]:
        try:
            return self.configs[name]
        except KeyError:
            known = ", ".join(sorted(self.configs)) or "none"
            raise MigConfigError(f"{self.source}: no config named {name!r} (known: {known})") from None

    def to_json(self) -> dict[str, Any]:
        return {"configs": {name: [e.to_json() for e in entries] for name, entries in self.configs.items()}}


def _parse_entry(source: str, config: str, position: int, raw: Any) -> MigConfigEntry:
    where = f"{source}: config {config!r} entry {position}"
    here: tuple[int | str, ...] = ("mig-configs", config, position - 1)
    if not isinstance(raw, dict):
        raise MigConfigError(
            f"{where}: must be a mapping with devices/mig-enabled/mig-devices, got {raw!r:.60}", loc=here
        )
    try:
        entry = MigConfigEntry.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        # Literal|list unions report the branch in the location; keep only the user's field name.
        field = str(loc[0]) if loc else "entry"
        at = (*here, field) if loc else here
        if err["type"] == "extra_forbidden":
            raise MigConfigError(f"{where}: unknown key {field!r}", loc=at) from None
        if err["type"] == "missing":
            raise MigConfigError(f"{where}: field {field!r} is required", loc=at) from None
        if field == "devices":
            # 'all' | list: the literal branch always fails for a list; the list branch says why.
            types = {e["type"] for e in exc.errors() if e["loc"][:1] == ("devices",)}
            message = f"must be 'all' or a list of GPU indexes, got {raw.get('devices')!r:.60}"
            if types & {"greater_than_equal", "less_than_equal"}:
                message = f"has GPU indexes that must be >= 0 and <= {MAX_GPU_INDEX}, got {raw.get('devices')!r:.60}"
            elif err["type"] == "value_error":
                message = str(err["msg"]).removeprefix("Value error, ")
            raise MigConfigError(f"{where}: field 'devices' {message}", loc=at) from None
        message = str(err["msg"]).removeprefix("Value error, ")
        inner = loc[1:] if field == "mig-devices" and len(loc) > 1 else ()
        detail = f" profile {inner[0]!r:.40}" if inner else ""
        if inner and err["type"] in ("less_than_equal", "greater_than_equal", "int_type", "int_parsing"):
            message = (
                f"count must be >= 0 and <= {MAX_MIG_INSTANCES_PER_GPU} (a whole number), got {err['input']!r:.40}"
            )
        raise MigConfigError(f"{where}: field {field!r}{detail}: {message}", loc=(*at, *inner[:1])) from None
    if not entry.mig_enabled and any(count > 0 for count in entry.mig_devices.values()):
        raise MigConfigError(
            f"{where}: field 'mig-devices' lists {', '.join(entry.mig_devices)} but mig-enabled is false",
            loc=(*here, "mig-devices"),
        )
    return entry


def parse_mig_document(source: str, doc: dict[str, Any]) -> dict[str, list[MigConfigEntry]]:
    """The named configs of one mig-parted document (a mapping); raise ``MigConfigError`` naming the field."""
    unknown = sorted(str(key) for key in set(doc) - {"version", "mig-configs"})
    if unknown:
        raise MigConfigError(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}", loc=(unknown[0],))
    version = doc.get("version")
    if version != SUPPORTED_VERSION:
        raise MigConfigError(f"{source}: version must be {SUPPORTED_VERSION!r}, got {version!r:.40}", loc=("version",))
    configs = doc.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise MigConfigError(
            f"{source}: 'mig-configs' must be a non-empty mapping of config name -> entries", loc=("mig-configs",)
        )
    parsed: dict[str, list[MigConfigEntry]] = {}
    for name, entries in configs.items():
        if not isinstance(name, str):
            raise MigConfigError(f"{source}: config name {name!r} must be a string", loc=("mig-configs",))
        if not isinstance(entries, list) or not entries:
            raise MigConfigError(
                f"{source}: config {name!r} must be a non-empty list of entries", loc=("mig-configs", name)
            )
        parsed[name] = [_parse_entry(source, name, i + 1, raw) for i, raw in enumerate(entries)]
    return parsed


def mig_config_from_document(doc: Any, source: str = "<document>") -> MigPartedConfig:
    """A whole mig-parted document (already decoded from YAML or JSON) as a :class:`MigPartedConfig`."""
    if not isinstance(doc, dict):
        raise MigConfigError(f"{source}: expected a mig-parted document (a mapping), got {type(doc).__name__}")
    return MigPartedConfig(configs=parse_mig_document(source, doc), source=source)
