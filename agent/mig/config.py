"""NVIDIA mig-parted configuration files, read unchanged.

Accepted shapes:

* a raw mig-parted document (``version: v1`` + ``mig-configs``);
* the same document inside a Kubernetes ConfigMap, under any ``data`` key (the GPU Operator uses
  ``config.yaml``);
* several YAML documents in one file (``---``), each one of the above; other Kubernetes objects
  in a multi-document manifest are skipped.

Unknown keys are refused, as mig-parted itself does, and every error names the config, the entry
and the field, so an operator can fix the file without reading code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

SUPPORTED_VERSION = "v1"
PCI_ID_PATTERN = re.compile(r"^0x[0-9a-fA-F]{8}$")
# [<C>c.]<G>g.<GB>gb[+attr[,attr...]] or -attr; attributes as go-nvlib knows them.
PROFILE_PATTERN = re.compile(
    r"^(?:(?P<c>[1-9][0-9]*)c\.)?(?P<g>[1-9][0-9]*)g\.(?P<gb>[0-9]+)gb(?P<attrs>[+-][a-z.]+(?:,[a-z.]+)*)?$"
)
PROFILE_ATTRIBUTES = {"me", "me.all", "gfx"}


class MigError(Exception):
    """Base of every error the MIG package raises on purpose."""


class MigConfigError(MigError, ValueError):
    """A mig-parted config file that cannot be read or is not valid."""


def check_profile_name(name: str) -> str:
    """Return ``name`` if it follows mig-parted's profile grammar, else raise ``ValueError``."""
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


class MigConfigEntry(BaseModel):
    """One device group of a mig-parted config (mig-parted calls it a MigConfigSpec)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    devices: Literal["all"] | list[StrictInt]
    device_filter: list[str] | None = Field(default=None, alias="device-filter")
    mig_enabled: StrictBool = Field(alias="mig-enabled")
    mig_devices: dict[str, StrictInt] = Field(default_factory=dict, alias="mig-devices")

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must be 'all' or a non-empty list of GPU indexes")
            negative = [i for i in value if i < 0]
            if negative:
                raise ValueError(f"GPU indexes must be >= 0, got {negative}")
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
            value = [f"0x{v:08X}" if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
            for item in value:
                if not isinstance(item, str) or not PCI_ID_PATTERN.match(item):
                    raise ValueError(f"{item!r} is not a PCI device id like '0x20B010DE'")
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
        for name, count in value.items():
            check_profile_name(name)
            if count < 0:
                raise ValueError(f"count for {name!r} must be >= 0, got {count}")
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


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) if loc else "entry"


def _parse_entry(source: str, config: str, position: int, raw: Any) -> MigConfigEntry:
    where = f"{source}: config {config!r} entry {position}"
    if not isinstance(raw, dict):
        raise MigConfigError(f"{where}: must be a mapping with devices/mig-enabled/mig-devices, got {raw!r}")
    try:
        entry = MigConfigEntry.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        # Literal|list unions report the branch in the location; keep only the user's field name.
        field = str(loc[0]) if loc else "entry"
        if err["type"] == "extra_forbidden":
            raise MigConfigError(f"{where}: unknown key {field!r}") from None
        if err["type"] == "missing":
            raise MigConfigError(f"{where}: field {field!r} is required") from None
        if field == "devices":
            message = f"must be 'all' or a list of GPU indexes, got {raw.get('devices')!r}"
            if err["type"] == "value_error":
                message = str(err["msg"]).removeprefix("Value error, ")
            raise MigConfigError(f"{where}: field 'devices' {message}") from None
        message = str(err["msg"]).removeprefix("Value error, ")
        inner = loc[1:] if field == "mig-devices" and len(loc) > 1 else ()
        detail = f" profile {inner[0]!r}" if inner else ""
        raise MigConfigError(f"{where}: field {field!r}{detail}: {message}") from None
    if not entry.mig_enabled and any(count > 0 for count in entry.mig_devices.values()):
        raise MigConfigError(
            f"{where}: field 'mig-devices' lists {', '.join(entry.mig_devices)} but mig-enabled is false"
        )
    return entry


def _parse_document(source: str, doc: dict[str, Any]) -> dict[str, list[MigConfigEntry]]:
    unknown = sorted(set(doc) - {"version", "mig-configs"})
    if unknown:
        raise MigConfigError(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}")
    version = doc.get("version")
    if version != SUPPORTED_VERSION:
        raise MigConfigError(f"{source}: version must be {SUPPORTED_VERSION!r}, got {version!r}")
    configs = doc.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise MigConfigError(f"{source}: 'mig-configs' must be a non-empty mapping of config name -> entries")
    parsed: dict[str, list[MigConfigEntry]] = {}
    for name, entries in configs.items():
        if not isinstance(name, str):
            raise MigConfigError(f"{source}: config name {name!r} must be a string")
        if not isinstance(entries, list) or not entries:
            raise MigConfigError(f"{source}: config {name!r} must be a non-empty list of entries")
        parsed[name] = [_parse_entry(source, name, i + 1, raw) for i, raw in enumerate(entries)]
    return parsed


def _documents_in(source: str, doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """The mig-parted documents held by one YAML document (itself, or a ConfigMap's data values)."""
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise MigConfigError(f"{source}: expected a mapping (a mig-parted config or a ConfigMap), got {doc!r:.60}")
    if "kind" not in doc and "apiVersion" not in doc:
        return [(source, doc)]
    if doc.get("kind") != "ConfigMap":
        return []  # another Kubernetes object in a multi-document manifest
    name = (doc.get("metadata") or {}).get("name", "?")
    found: list[tuple[str, dict[str, Any]]] = []
    for key, value in (doc.get("data") or {}).items():
        where = f"{source} (ConfigMap {name!r} key {key!r})"
        if not isinstance(value, str):
            continue
        try:
            inner = yaml.safe_load(value)
        except yaml.YAMLError:
            continue  # a data key holding something other than YAML is not ours
        if isinstance(inner, dict) and "mig-configs" in inner:
            found.append((where, inner))
    return found


def load_mig_config(source: str | Path) -> MigPartedConfig:
    """Read a mig-parted config from a file path or from YAML text.

    A ``Path`` (or a string naming an existing file) is read; any other string is parsed as YAML.
    Configs from several documents are merged; a name defined twice is an error.
    """
    if isinstance(source, Path) or ("\n" not in source and Path(source).is_file()):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MigConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return parse_mig_config(text, str(path))
    return parse_mig_config(source)


def parse_mig_config(text: str, source: str = "<text>") -> MigPartedConfig:
    """Parse mig-parted YAML text; ``source`` names it in error messages."""
    label = source
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise MigConfigError(f"{label}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    configs: dict[str, list[MigConfigEntry]] = {}
    origin: dict[str, str] = {}
    for number, doc in enumerate(documents, start=1):
        doc_label = label if len(documents) == 1 else f"{label} document {number}"
        for where, raw in _documents_in(doc_label, doc):
            for name, entries in _parse_document(where, raw).items():
                if name in configs:
                    raise MigConfigError(f"{where}: config {name!r} is already defined in {origin[name]}")
                configs[name] = entries
                origin[name] = where
    if not configs:
        raise MigConfigError(f"{label}: no mig-parted config found (expected 'version: v1' and 'mig-configs')")
    return MigPartedConfig(configs=configs, source=label)
